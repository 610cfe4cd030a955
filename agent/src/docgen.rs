//! Generated sections of docs/metrics.md and the README: a test checks each
//! one against what the code's catalogue renders (`SYSCOPE_BLESS=1`
//! rewrites it).

/// Assert that the section between `<!-- {marker}:begin -->` and
/// `<!-- {marker}:end -->` of docs/metrics.md is `want`.
pub fn check_section(marker: &str, want: &str) {
    check_section_in("docs/metrics.md", marker, want);
}

/// [`check_section`] in `file` (relative to the repository).
pub fn check_section_in(file: &str, marker: &str, want: &str) {
    let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
    let path = path.as_str();
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
        panic!("{file} section {marker} is stale (SYSCOPE_BLESS=1 rewrites it); expected:\n{want}");
    }
}
