//! `spec.secretMounts`: its validation (field paths from the SpanSink's root), the Secret
//! volumes and read-only mounts it adds to the exporter pod, and what a Secret found in the
//! cluster lacks. Pure; the controller looks the Secrets up. Not the exporter's own checks.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use spansink_config::ValidationError;

use super::{CONFIG_DIR, CONFIG_KEY};
use crate::crd::SecretMount;

/// Mode of every mounted file: read-only for the owner (root) and the group, which the
/// pod's `fsGroup` makes the exporter's; nobody else. Secret keys are private keys and tokens.
pub const SECRET_FILE_MODE: i32 = 0o440;

/// Longest Secret name (a DNS-1123 subdomain) and Secret key.
const MAX_NAME_LEN: usize = 253;

/// Name of the pod volume of `spec.secretMounts[index]`. By position, not by Secret name:
/// one Secret may be mounted twice, and a name can be longer than a volume name may be.
pub fn volume_name(index: usize) -> String {
    format!("secret-{index}")
}

/// Every problem of `spec.secretMounts`, each naming its field (`spec.secretMounts[1].mountPath`).
pub fn validate(mounts: &[SecretMount]) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    let mut error = |path: String, message: String| errors.push(ValidationError { path, message });
    for (i, mount) in mounts.iter().enumerate() {
        let at = format!("spec.secretMounts[{i}]");
        if let Err(why) = dns_subdomain(&mount.secret_name) {
            error(
                format!("{at}.secretName"),
                format!("{:?} is not a Secret name: {why}", mount.secret_name),
            );
        }
        match mount_path(&mount.mount_path) {
            Err(why) => error(format!("{at}.mountPath"), why),
            Ok(()) => {
                let path = Path::new(&mount.mount_path);
                if let Some((j, other)) = mounts[..i].iter().enumerate().find(|(_, other)| {
                    let other = Path::new(&other.mount_path);
                    path.starts_with(other) || other.starts_with(path)
                }) {
                    error(
                        format!("{at}.mountPath"),
                        format!(
                            "{} overlaps spec.secretMounts[{j}].mountPath {}: one mount would hide \
                             the other's files; give each Secret a directory of its own",
                            mount.mount_path, other.mount_path
                        ),
                    );
                }
            }
        }
        let mut file_paths = BTreeSet::new();
        for (k, item) in mount.items.iter().enumerate() {
            if let Err(why) = secret_key(&item.key) {
                error(
                    format!("{at}.items[{k}].key"),
                    format!("{:?} is not a Secret key: {why}", item.key),
                );
            }
            if let Err(why) = item_path(&item.path) {
                error(format!("{at}.items[{k}].path"), why);
            } else if !file_paths.insert(item.path.as_str()) {
                error(
                    format!("{at}.items[{k}].path"),
                    format!(
                        "{} is already the path of another item of this mount; give each key its \
                         own file",
                        item.path
                    ),
                );
            }
        }
    }
    errors
}

/// The Secret volumes of the exporter pod, in `spec.secretMounts` order.
pub fn volumes(mounts: &[SecretMount]) -> impl Iterator<Item = Volume> + '_ {
    mounts.iter().enumerate().map(|(i, mount)| Volume {
        name: volume_name(i),
        secret: Some(SecretVolumeSource {
            secret_name: Some(mount.secret_name.clone()),
            items: (!mount.items.is_empty()).then(|| {
                mount
                    .items
                    .iter()
                    .map(|item| KeyToPath {
                        key: item.key.clone(),
                        path: item.path.clone(),
                        mode: None,
                    })
                    .collect()
            }),
            default_mode: Some(SECRET_FILE_MODE),
            // Unset rather than `false` (the same to the kubelet): what is not asked for
            // stays out of the applied object.
            optional: mount.optional.then_some(true),
        }),
        ..Volume::default()
    })
}

/// The read-only mounts of the Secret volumes in the exporter container. No `subPath`:
/// the kubelet does not update files mounted through one.
pub fn volume_mounts(mounts: &[SecretMount]) -> impl Iterator<Item = VolumeMount> + '_ {
    mounts.iter().enumerate().map(|(i, mount)| VolumeMount {
        name: volume_name(i),
        mount_path: mount.mount_path.clone(),
        read_only: Some(true),
        ..VolumeMount::default()
    })
}

/// Why the exporter pods cannot start for want of a Secret or a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProblem {
    /// `SecretMissing` or `SecretKeyMissing`: the `Ready` condition's reason.
    pub reason: &'static str,
    /// Names the Secret, the mount and what to do.
    pub message: String,
}

/// A Secret as the controller found it: absent, or present with these `data` keys.
pub type FoundSecret = Option<BTreeSet<String>>;

/// What the mounts that are not `optional` lack, given how each Secret was found
/// (`found(name)`; every name is looked up at most once by the caller).
pub fn secret_problems(
    namespace: &str,
    mounts: &[SecretMount],
    mut found: impl FnMut(&str) -> FoundSecret,
) -> Vec<SecretProblem> {
    let mut problems = Vec::new();
    for (i, mount) in mounts.iter().enumerate().filter(|(_, m)| !m.optional) {
        let name = &mount.secret_name;
        let at = format!("spec.secretMounts[{i}], mounted at {}", mount.mount_path);
        match found(name) {
            None => problems.push(SecretProblem {
                reason: "SecretMissing",
                message: format!(
                    "Secret {namespace}/{name} ({at}) does not exist: new exporter pods cannot \
                     start until it does; create it, or set optional: true"
                ),
            }),
            Some(keys) => {
                for (k, item) in mount.items.iter().enumerate() {
                    if !keys.contains(&item.key) {
                        problems.push(SecretProblem {
                            reason: "SecretKeyMissing",
                            message: format!(
                                "Secret {namespace}/{name} has no key {} (spec.secretMounts[{i}].items[{k}].key): \
                                 new exporter pods cannot start until it does; add the key, or \
                                 fix the item",
                                item.key
                            ),
                        });
                    }
                }
            }
        }
    }
    problems
}

fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("it must have 1 to {MAX_NAME_LEN} characters"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or \
             digit (a DNS-1123 subdomain)"
                .into(),
        )
    }
}

fn secret_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_NAME_LEN {
        return Err(format!("it must have 1 to {MAX_NAME_LEN} characters"));
    }
    if key == "." || key == ".." {
        return Err("'.' and '..' are not keys".into());
    }
    if key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err("use letters, digits, '-', '_' and '.'".into())
    }
}

/// Strictly below [`CONFIG_DIR`], written plainly: the kubelet nests Secret volumes inside
/// the ConfigMap's, but one at the config directory itself, or at its `config.yaml`, would
/// hide the exporter's config; `..`-prefixed names are the kubelet's own in that volume.
fn mount_path(path: &str) -> Result<(), String> {
    let example = format!("use a directory of its own below {CONFIG_DIR}, e.g. {CONFIG_DIR}/tls");
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{path:?} is not an absolute path; {example}"));
    }
    // Segment by segment: `Path::components` would quietly drop `.` and a trailing `/`.
    if path
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "{path} is not written plainly (no '.', '..', '//' or trailing '/'); {example}"
        ));
    }
    let Ok(below) = p.strip_prefix(CONFIG_DIR) else {
        return Err(format!(
            "{path} is not below {CONFIG_DIR}: the other directories of the exporter's \
             filesystem are its image's, the queue volume's (/var/lib/spansink) or /tmp; {example}"
        ));
    };
    match below.components().next() {
        None => Err(format!(
            "{path} is the config directory, where the rendered config is mounted; {example}"
        )),
        Some(first) if first.as_os_str() == CONFIG_KEY => Err(format!(
            "{path} would hide the exporter's config file {CONFIG_DIR}/{CONFIG_KEY}; {example}"
        )),
        Some(first) if first.as_os_str().to_string_lossy().starts_with("..") => Err(format!(
            "{path}: names starting with '..' below {CONFIG_DIR} are the kubelet's own; {example}"
        )),
        Some(_) => Ok(()),
    }
}

/// A file path inside the Secret's directory, as the API server admits in `items[].path`.
fn item_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() {
        return Err("a file path is required, e.g. tls.crt".into());
    }
    if p.is_absolute() {
        return Err(format!(
            "{path} is absolute; give a path relative to mountPath, e.g. tls.crt"
        ));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) || path.starts_with("..") {
        return Err(format!(
            "{path} contains '..' (or starts with it); give a path inside mountPath, e.g. tls.crt"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretMountItem;

    fn mount(secret: &str, path: &str) -> SecretMount {
        SecretMount {
            secret_name: secret.into(),
            mount_path: path.into(),
            items: Vec::new(),
            optional: false,
        }
    }

    fn item(key: &str, path: &str) -> SecretMountItem {
        SecretMountItem {
            key: key.into(),
            path: path.into(),
        }
    }

    fn paths(errors: &[ValidationError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn plain_directories_below_the_config_directory_pass() {
        let mut tls = mount("receiver-tls", "/etc/spansink/tls");
        tls.items = vec![item("tls.crt", "server.crt"), item("ca.crt", "ca/ca.crt")];
        let mounts = [
            tls,
            mount("postgres-ca.v2", "/etc/spansink/postgres"),
            mount("receiver-tls", "/etc/spansink/tls-again/nested"),
        ];
        assert_eq!(validate(&mounts), []);
        assert_eq!(validate(&[]), []);
    }

    #[test]
    fn each_bad_mount_path_is_refused_naming_its_field() {
        for (bad, why) in [
            ("etc/spansink/tls", "not an absolute path"),
            ("/etc/spansink/tls/", "not written plainly"),
            ("/etc/spansink//tls", "not written plainly"),
            ("/etc/spansink/./tls", "not written plainly"),
            ("/etc/spansink/../tls", "not written plainly"),
            ("/etc/spansink", "is the config directory"),
            (
                "/etc/spansink/config.yaml",
                "hide the exporter's config file",
            ),
            (
                "/etc/spansink/config.yaml/x",
                "hide the exporter's config file",
            ),
            ("/etc/spansink/..data", "the kubelet's own"),
            ("/var/lib/spansink/tls", "not below /etc/spansink"),
            ("/tmp/tls", "not below /etc/spansink"),
            ("/etc/spansinkx/tls", "not below /etc/spansink"),
            ("/etc", "not below /etc/spansink"),
        ] {
            let errors = validate(&[mount("ok", "/etc/spansink/a"), mount("ok", bad)]);
            assert_eq!(paths(&errors), ["spec.secretMounts[1].mountPath"], "{bad}");
            assert!(
                errors[0].message.contains(why),
                "{bad}: {}",
                errors[0].message
            );
            assert!(
                errors[0].message.contains("/etc/spansink/tls"),
                "{bad}: says what to use: {}",
                errors[0].message
            );
        }
    }

    #[test]
    fn duplicate_and_nested_mount_paths_are_refused_at_the_later_mount() {
        for (first, second) in [
            ("/etc/spansink/tls", "/etc/spansink/tls"),
            ("/etc/spansink/tls", "/etc/spansink/tls/ca"),
            ("/etc/spansink/tls/ca", "/etc/spansink/tls"),
        ] {
            let errors = validate(&[
                mount("a", "/etc/spansink/other"),
                mount("a", first),
                mount("b", second),
            ]);
            assert_eq!(paths(&errors), ["spec.secretMounts[2].mountPath"]);
            assert!(
                errors[0]
                    .message
                    .contains(&format!("overlaps spec.secretMounts[1].mountPath {first}")),
                "{}",
                errors[0].message
            );
        }
        // Sharing a prefix as a string is not nesting.
        assert_eq!(
            validate(&[
                mount("a", "/etc/spansink/tls"),
                mount("b", "/etc/spansink/tls2")
            ]),
            []
        );
    }

    #[test]
    fn bad_secret_names_keys_and_item_paths_are_refused_naming_their_fields() {
        let long = "a".repeat(254);
        for bad in [
            "",
            "Receiver-TLS",
            "-tls",
            "tls-",
            "tls..ca",
            "tls_ca",
            long.as_str(),
        ] {
            let errors = validate(&[mount(bad, "/etc/spansink/tls")]);
            assert_eq!(
                paths(&errors),
                ["spec.secretMounts[0].secretName"],
                "{bad:?}"
            );
        }
        let mut m = mount("tls", "/etc/spansink/tls");
        m.items = vec![
            item("tls.crt", "tls.crt"),
            item("bad key", "a"),
            item("ca.crt", "/abs"),
            item("ca.crt", "../up"),
            item("ca.crt", "..hidden"),
            item("ca.crt", ""),
            item("tls.key", "tls.crt"),
            item("..", "b"),
        ];
        let errors = validate(&[m]);
        assert_eq!(
            paths(&errors),
            [
                "spec.secretMounts[0].items[1].key",
                "spec.secretMounts[0].items[2].path",
                "spec.secretMounts[0].items[3].path",
                "spec.secretMounts[0].items[4].path",
                "spec.secretMounts[0].items[5].path",
                "spec.secretMounts[0].items[6].path",
                "spec.secretMounts[0].items[7].key",
            ]
        );
        assert!(
            errors[5]
                .message
                .contains("already the path of another item")
        );
    }

    #[test]
    fn volumes_and_mounts_follow_the_spec_in_order() {
        let mut tls = mount("receiver-tls", "/etc/spansink/tls");
        tls.items = vec![item("tls.crt", "server.crt")];
        let mut ca = mount("pg-ca", "/etc/spansink/postgres");
        ca.optional = true;
        let mounts = [tls, ca];
        let v: Vec<Volume> = volumes(&mounts).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "secret-0");
        let s = v[0].secret.as_ref().unwrap();
        assert_eq!(s.secret_name.as_deref(), Some("receiver-tls"));
        assert_eq!(s.default_mode, Some(0o440));
        assert_eq!(s.optional, None);
        let items = s.items.as_ref().unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("tls.crt", "server.crt")
        );
        let s = v[1].secret.as_ref().unwrap();
        assert_eq!((s.items.as_ref(), s.optional), (None, Some(true)));
        let m: Vec<(String, String, Option<bool>, Option<String>)> = volume_mounts(&mounts)
            .map(|m| (m.name, m.mount_path, m.read_only, m.sub_path))
            .collect();
        assert_eq!(
            m,
            [
                (
                    "secret-0".into(),
                    "/etc/spansink/tls".into(),
                    Some(true),
                    None
                ),
                (
                    "secret-1".into(),
                    "/etc/spansink/postgres".into(),
                    Some(true),
                    None
                ),
            ]
        );
    }

    #[test]
    fn problems_name_the_missing_secret_or_key_and_skip_optional_mounts() {
        let mut tls = mount("receiver-tls", "/etc/spansink/tls");
        tls.items = vec![item("tls.crt", "tls.crt"), item("ca.crt", "ca.crt")];
        let mut optional = mount("gone-too", "/etc/spansink/opt");
        optional.optional = true;
        let mounts = [tls, mount("gone", "/etc/spansink/pg"), optional];
        let found = |name: &str| match name {
            "receiver-tls" => Some(BTreeSet::from(["tls.crt".to_string(), "tls.key".into()])),
            _ => None,
        };
        let p = secret_problems("team-a", &mounts, found);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].reason, "SecretKeyMissing");
        assert!(
            p[0].message.starts_with(
                "Secret team-a/receiver-tls has no key ca.crt (spec.secretMounts[0].items[1].key)"
            ),
            "{}",
            p[0].message
        );
        assert_eq!(p[1].reason, "SecretMissing");
        assert!(
            p[1].message.starts_with(
                "Secret team-a/gone (spec.secretMounts[1], mounted at /etc/spansink/pg) does not exist"
            ),
            "{}",
            p[1].message
        );
        // Present with every key: nothing to report.
        assert_eq!(
            secret_problems("team-a", &mounts[..1], |_| Some(BTreeSet::from([
                "tls.crt".into(),
                "ca.crt".into()
            ]))),
            []
        );
    }
}
