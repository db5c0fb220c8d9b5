//! Parsers for `/proc` text that a container process prints (or that the host reads about it):
//! `Name:` fields of `/proc/<pid>/status`, `ls -l /proc/self/fd` listings, `uid_map` lines.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};

/// The value of the `Name:` line of a `/proc/<pid>/status` text (trimmed), if there is one.
pub fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// The descriptors in a busybox `ls -l /proc/self/fd` listing, each with its link target, leaving out
/// the directory descriptor `ls` itself opened to list them (its target is `/proc/<pid>/fd`).
pub fn fd_listing(text: &str) -> Result<BTreeMap<i32, String>> {
    let mut fds = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains(" -> ")) {
        let (left, target) = line
            .split_once(" -> ")
            .ok_or_else(|| anyhow!("not a link line: {line:?}"))?;
        let name = left
            .split_whitespace()
            .last()
            .ok_or_else(|| anyhow!("no name in {line:?}"))?;
        let fd: i32 = name
            .parse()
            .with_context(|| format!("fd name {name:?} in {line:?}"))?;
        let target = target.trim();
        let own_dir = target
            .strip_prefix("/proc/")
            .and_then(|rest| rest.strip_suffix("/fd"))
            .is_some_and(|pid| pid == "self" || pid.parse::<u32>().is_ok());
        if !own_dir {
            fds.insert(fd, target.to_string());
        }
    }
    Ok(fds)
}

/// The lines of a `uid_map` or `gid_map` text as `[inside, outside, count]` triples.
pub fn id_map(text: &str) -> Result<Vec<[u64; 3]>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("id map line {l:?}"))?;
            match v[..] {
                [a, b, c] => Ok([a, b, c]),
                _ => Err(anyhow!("id map line {l:?} has not three numbers")),
            }
        })
        .collect()
}
