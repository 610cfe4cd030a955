//! Generated sections of docs/metrics.md: a test checks each one against
//! what the code's catalogue renders (`SYSCOPE_BLESS=1` rewrites it).

/// Assert that the section between `<!-- {marker}:begin -->` and
/// `<!-- {marker}:end -->` of docs/metrics.md is `want`.
pub fn check_section(marker: &str, want: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (begin, end) = (
        format!("<!-- {marker}:begin -->\n"),
        format!("<!-- {marker}:end -->"),
    );
    let a = doc.find(&begin).expect("begin marker") + begin.len();
    let b = doc.find(&end).expect("end marker");
    if doc[a..b] == *want {
        return;
    }
    if std::env::var_os("SYSCOPE_BLESS").is_some() {
        std::fs::write(path, format!("{}{want}{}", &doc[..a], &doc[b..])).unwrap();
    } else {
        panic!("docs/metrics.md section {marker} is stale (SYSCOPE_BLESS=1 rewrites it); expected:\n{want}");
    }
}
