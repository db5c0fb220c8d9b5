//! Property tests over config parsing, validation and planning: whatever
//! the bytes of config.json, the runtime answers `Ok` or an error naming a
//! field, never a panic. Runs without root (nothing is applied). Failing
//! cases proptest finds are kept in `config_fuzz.proptest-regressions`;
//! hand-made hostile configs live in `tests/corpus/`.

use proptest::prelude::*;
use serde_json::{json, Value};
use skiff::plan::{self, LaunchOptions};
use std::path::Path;

/// Parses, validates and plans; the result does not matter, a panic does.
fn exercise(data: &[u8]) {
    let Ok(spec) = skiff::spec::parse(data) else {
        return;
    };
    if skiff::spec::validate(&spec).is_err() {
        return;
    }
    for console in [false, true] {
        let opts = LaunchOptions {
            has_console_socket: console,
            ..Default::default()
        };
        let _ = plan::build("fuzz", Path::new("/bundle"), &spec, opts);
    }
}

fn base() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["PATH=/bin"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}],
                    "capabilities": {"bounding": ["CAP_KILL"]}},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]}],
        "hooks": {"poststop": [{"path": "/bin/true", "timeout": 1}]},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "user"}, {"type": "ipc"}],
            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
            "sysctl": {"kernel.shm_rmid_forced": "1"},
            "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                      "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
            "resources": {"memory": {"limit": 1000000}, "cpu": {"shares": 2, "quota": 1000, "period": 100000},
                          "pids": {"limit": 10}, "devices": [{"allow": false, "access": "rwm"}]},
            "cgroupsPath": "/a/b"
        }
    })
}

/// Values that tend to hit edges: empty, huge, negative, relative paths,
/// dot-dot, names with NULs.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "/",
            "..",
            "../..",
            "rootfs",
            "/proc/self/fd/3",
            "a/b",
            "\u{0}",
            "1.0.0",
            "2.0",
            "SCMP_ACT_NOTIFY",
            "rbind",
            "cgroup",
            "pid",
            "user",
            "LINUX32",
            "RLIMIT_NOFILE",
            "CAP_SYS_ADMIN",
            "slice:prefix:name",
            "net.ipv4.ip_forward",
        ])
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "ociVersion",
                    "root",
                    "path",
                    "process",
                    "args",
                    "cwd",
                    "user",
                    "uid",
                    "mounts",
                    "destination",
                    "type",
                    "source",
                    "options",
                    "linux",
                    "namespaces",
                    "devices",
                    "major",
                    "minor",
                    "seccomp",
                    "syscalls",
                    "names",
                    "action",
                    "resources",
                    "memory",
                    "limit",
                    "hooks",
                    "timeout",
                ])
                .prop_map(String::from),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the value at the path `choices` picks in `v` with `new`.
fn mutate(v: &mut Value, choices: &[usize], new: Value) {
    match (choices.split_first(), v) {
        (Some((c, rest)), Value::Object(m)) if !m.is_empty() => {
            let k = m.keys().nth(c % m.len()).cloned().unwrap_or_default();
            if let Some(n) = m.get_mut(&k) {
                mutate(n, rest, new);
            }
        }
        (Some((c, rest)), Value::Array(a)) if !a.is_empty() => {
            let n = a.len();
            mutate(&mut a[c % n], rest, new);
        }
        (_, v) => *v = new,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_documents_never_panic(v in value()) {
        exercise(v.to_string().as_bytes());
    }

    #[test]
    fn mutated_valid_configs_never_panic(
        path in prop::collection::vec(any::<usize>(), 1..6),
        new in value(),
    ) {
        let mut v = base();
        mutate(&mut v, &path, new);
        exercise(v.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&data);
    }
}

#[test]
fn base_config_plans() {
    let spec = skiff::spec::parse(base().to_string().as_bytes()).expect("parse");
    skiff::spec::validate(&spec).expect("validate");
    plan::build("x", Path::new("/b"), &spec, LaunchOptions::default()).expect("plan");
}

#[test]
fn corpus_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("corpus dir") {
        let p = e.expect("entry").path();
        exercise(&std::fs::read(&p).expect("read"));
        n += 1;
    }
    assert!(n >= 5, "the corpus has {n} files");
}
