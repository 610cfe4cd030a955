//! `syscope slo rules`: Prometheus recording and alerting rules generated
//! from the SLO definitions.

use super::Slo;

/// The rule file (YAML) for `slos`.
pub fn render(slos: &[Slo]) -> String {
    let _ = slos;
    String::from("groups: []\n")
}
