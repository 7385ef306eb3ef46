//! Target `config_yaml`: the config parser and `validate`.

use spansink_config::ExporterConfig;

/// Any text is a config or a clear error, never a panic; and a config that is accepted reads
/// back the same from its canonical YAML (what the operator writes into a ConfigMap is what
/// the exporter then runs).
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ExporterConfig::from_yaml(text) else {
        return;
    };
    let canonical = config.to_yaml();
    match ExporterConfig::from_yaml(&canonical) {
        Ok(again) => assert!(
            again == config,
            "the canonical YAML reads back differently:\n{canonical}\nFIRST {config:#?}\nAGAIN {again:#?}"
        ),
        Err(e) => panic!("the canonical YAML of an accepted config is refused: {e}\n{canonical}"),
    }
}

#[cfg(test)]
mod tests {
    use super::config_yaml;
    use crate::fuzzing::mutate::for_each_mutation;

    #[test]
    fn mutated_configs_keep_the_invariants() {
        for_each_mutation("config_yaml", 2_000, 0xc0f, config_yaml);
    }
}
