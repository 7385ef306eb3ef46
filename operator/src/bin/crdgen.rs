//! Prints the SpanSink CustomResourceDefinition as YAML, the source of `crds/spansink.yaml`.
//! Not an installer: `kubectl apply -f` or the Helm chart puts it into a cluster.

fn main() -> std::process::ExitCode {
    match spansink_operator::crd_yaml::render() {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
