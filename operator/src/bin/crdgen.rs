//! Prints generated deployment files: the SpanSink CRD YAML (default, the source of
//! `crds/spansink.yaml`) or, with `rbac`, the chart's RBAC rules template. Installs nothing.

fn main() -> std::process::ExitCode {
    let what = std::env::args().nth(1);
    let output = match what.as_deref() {
        None | Some("crd") => spansink_operator::crd_yaml::render().map_err(|e| e.to_string()),
        Some("rbac") => Ok(spansink_operator::rbac::helm_rules_template()),
        Some(other) => Err(format!(
            "unknown output {other:?}; use `crd` (default) or `rbac`"
        )),
    };
    match output {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
