//! `exec --cgroup`: the sub-cgroup of the container an exec'd process joins
//! instead of the container's own, as runc 1.2 reads the flag: one `PATH`
//! (cgroup v2), or `CONTROLLER[,CONTROLLER...]:PATH` once per hierarchy
//! (cgroup v1; on v2 every controller must then name the same path). The
//! sub-cgroup must exist; a path never climbs out of the container's cgroup.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// A `--cgroup` argument could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SubCgroupError {
    #[error("invalid --cgroup argument {arg:?}: {reason}")]
    Invalid { arg: String, reason: String },
    #[error("--cgroup: sub-cgroup {path} does not exist")]
    Missing { path: PathBuf },
}

fn invalid(arg: &str, reason: impl Into<String>) -> SubCgroupError {
    SubCgroupError::Invalid {
        arg: arg.to_string(),
        reason: reason.into(),
    }
}

/// Controller (`""` for a bare path) → sub path, from the arguments.
fn parse(args: &[String]) -> Result<BTreeMap<String, PathBuf>, SubCgroupError> {
    let mut out = BTreeMap::new();
    for arg in args {
        match arg.split_once(':') {
            Some((ctrls, path)) => {
                for c in ctrls.split(',') {
                    if c.is_empty() {
                        return Err(invalid(arg, "empty controller before ':'"));
                    }
                    if out.insert(c.to_string(), inside(path)).is_some() {
                        return Err(invalid(arg, format!("controller {c} given twice")));
                    }
                }
            }
            None if args.len() == 1 => {
                out.insert(String::new(), inside(arg));
            }
            None => {
                return Err(invalid(
                    arg,
                    "several --cgroup need a CONTROLLER: prefix each",
                ))
            }
        }
    }
    Ok(out)
}

/// `path` as a relative path that cannot leave the directory it is joined
/// to (`..` stops at the top, as in a chroot).
fn inside(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The directories the process joins: the container's `dirs` (with the
/// record's `mode` and per-directory v1 `controllers`) with each named
/// sub-cgroup appended; each must exist.
pub fn sub_cgroup_dirs(
    mode: &str,
    dirs: &[PathBuf],
    controllers: &[Vec<String>],
    args: &[String],
) -> Result<Vec<PathBuf>, SubCgroupError> {
    let subs = parse(args)?;
    let joined: Vec<PathBuf> = if mode == "v2" || mode == "systemd" {
        let mut paths = subs.values();
        let first = paths.next().cloned().unwrap_or_default();
        if paths.any(|p| *p != first) {
            return Err(invalid(
                &args.join(" "),
                "cgroup v2 has one hierarchy: the controllers must name the same path",
            ));
        }
        dirs.iter().map(|d| d.join(&first)).collect()
    } else {
        if let Some(p) = subs.get("") {
            return Err(invalid(
                &p.display().to_string(),
                "cgroup v1 needs CONTROLLER:PATH",
            ));
        }
        for c in subs.keys() {
            if !controllers.iter().any(|cs| cs.contains(c)) {
                return Err(invalid(
                    c,
                    format!("no cgroup v1 hierarchy has controller {c}"),
                ));
            }
        }
        let mut out = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let cs = controllers.get(i).map(Vec::as_slice).unwrap_or_default();
            let mut named = cs.iter().filter_map(|c| subs.get(c));
            let sub = named.next();
            if let Some(s) = sub {
                if named.any(|o| o != s) {
                    return Err(invalid(
                        &cs.join(","),
                        "controllers of one hierarchy name different paths",
                    ));
                }
            }
            out.push(sub.map_or_else(|| d.clone(), |s| d.join(s)));
        }
        out
    };
    if let Some(missing) = joined.iter().find(|d| !d.is_dir()) {
        return Err(SubCgroupError::Missing {
            path: missing.clone(),
        });
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_as_runc() {
        let m = parse(&args(&["cpu,cpuacct:/a/b", "pids:c"])).unwrap();
        assert_eq!(m["cpu"], PathBuf::from("a/b"));
        assert_eq!(m["cpuacct"], PathBuf::from("a/b"));
        assert_eq!(m["pids"], PathBuf::from("c"));
        assert_eq!(parse(&args(&["x"])).unwrap()[""], PathBuf::from("x"));
        assert_eq!(inside("../../etc/../x"), PathBuf::from("x"));
        for bad in [&["a", "b"][..], &[":x"], &["cpu:a", "cpu:b"], &["cpu,:x"]] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn joins_existing_sub_cgroups_only() {
        let base = std::env::temp_dir().join(format!("skiff-sub-{}", std::process::id()));
        let (cpu, pids, uni) = (base.join("cpu"), base.join("pids"), base.join("unified"));
        std::fs::create_dir_all(cpu.join("s")).unwrap();
        std::fs::create_dir_all(&pids).unwrap();
        std::fs::create_dir_all(uni.join("s")).unwrap();
        let dirs = vec![cpu.clone(), pids.clone(), uni.clone()];
        let ctrls = vec![
            vec!["cpu".to_string(), "cpuacct".to_string()],
            vec!["pids".to_string()],
            vec![],
        ];
        let got = sub_cgroup_dirs("v1", &dirs, &ctrls, &args(&["cpu:s"])).unwrap();
        assert_eq!(got, vec![cpu.join("s"), pids.clone(), uni.clone()]);
        let e = sub_cgroup_dirs("v1", &dirs, &ctrls, &args(&["pids:s"])).unwrap_err();
        assert!(matches!(e, SubCgroupError::Missing { .. }), "{e}");
        assert!(sub_cgroup_dirs("v1", &dirs, &ctrls, &args(&["s"])).is_err());
        assert!(sub_cgroup_dirs("v1", &dirs, &ctrls, &args(&["memory:s"])).is_err());
        let got = sub_cgroup_dirs("v2", std::slice::from_ref(&uni), &[], &args(&["/s"])).unwrap();
        assert_eq!(got, vec![uni.join("s")]);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
