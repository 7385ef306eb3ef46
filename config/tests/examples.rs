//! Every exporter config under examples/ loads exactly as the exporter would load it.

use spansink_config::ExporterConfig;

#[test]
fn every_example_config_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            ExporterConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected quickstart, blackhole, kafka and s3 examples, found {checked}"
    );
}
