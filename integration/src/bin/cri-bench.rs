//! The CRI half of `scripts/bench.sh`: what a kubelet waits for, through a private containerd
//! with its CRI plugin ([`CriNode`]), skiff's handler against containerd's runc handler.
//!
//! ```text
//! cri-bench OUT_DIR [PODS] [EXECS] [--containerd 1.6|2] [--burst] [--prefix P] [--env K=V]...
//! ```
//!
//! For each handler, `PODS` pods one after the other (the handlers alternate pod by pod, so load
//! drifts hit both alike): RunPodSandbox + CreateContainer + StartContainer of a `sleep`, then
//! `EXECS` ExecSync of `/bin/true` into it, then StopPodSandbox + RemovePodSandbox. With
//! `--burst` the `PODS` pods of a handler start at once (one thread each, as a kubelet starts a
//! node's pods after a restart), their `EXECS` ExecSyncs run while all of them are up, and they
//! stop at once; each call is still timed on its own. Each is written as a hyperfine-shaped
//! export to `OUT_DIR/<P><section>@<handler>.json` (sections `start`, `exec`, `stop`; `P`
//! defaults to `cri-`), which `scripts/bench/report.sh` merges into rows. `--containerd 2`
//! runs containerd 2.4 (config version 3) instead of Debian's 1.6; `--env` puts a variable in
//! containerd's environment, and so in the shims' (`SKIFF_SHIM_EXEC=runtime`). Only wall times:
//! the work happens in containerd and the shims, not in this process. Dropping the node removes
//! whatever is left.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use skiff_integration::containerd::{Version, IMAGE};
use skiff_integration::cri::{container_config, CriNode, RUNC_HANDLER, SKIFF_HANDLER};

const HANDLERS: [&str; 2] = [SKIFF_HANDLER, RUNC_HANDLER];
const SECTIONS: [&str; 3] = ["start", "exec", "stop"];

struct Options {
    out: String,
    pods: usize,
    execs: usize,
    version: Version,
    burst: bool,
    prefix: String,
    env: Vec<(String, String)>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        out: String::new(),
        pods: 5,
        execs: 20,
        version: Version::Debian,
        burst: false,
        prefix: "cri-".into(),
        env: Vec::new(),
    };
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--containerd" => {
                o.version = match value("--containerd")?.as_str() {
                    "1.6" => Version::Debian,
                    "2" | "2.4" => Version::V2_4,
                    v => bail!("--containerd {v:?}: 1.6 or 2"),
                }
            }
            "--burst" => o.burst = true,
            "--prefix" => o.prefix = value("--prefix")?,
            "--env" => {
                let kv = value("--env")?;
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--env {kv:?}: K=V");
                };
                o.env.push((k.into(), v.into()));
            }
            _ => positional.push(a.clone()),
        }
    }
    let Some(out) = positional.first() else {
        bail!("usage: cri-bench OUT_DIR [PODS] [EXECS] [--containerd 1.6|2] [--burst] [--prefix P] [--env K=V]...");
    };
    o.out = out.clone();
    let number = |i: usize, default: usize| -> Result<usize> {
        positional.get(i).map_or(Ok(default), |s| {
            s.parse()
                .with_context(|| format!("argument {i}: {s:?} is not a number"))
        })
    };
    (o.pods, o.execs) = (number(1, 5)?, number(2, 20)?);
    if o.pods < 2 || o.execs < 2 {
        bail!("PODS and EXECS must be at least 2 (a standard deviation needs two runs)");
    }
    Ok(o)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = parse(&args)?;
    let node = CriNode::start_with_env(o.version, o.env.clone())?;
    // times[handler][section]: seconds.
    let mut times = vec![vec![Vec::new(); SECTIONS.len()]; HANDLERS.len()];
    // One untimed pod per handler first: the image unpack and first shim start are not the
    // steady state.
    for (h, handler) in HANDLERS.iter().enumerate() {
        let mut warm = vec![Vec::new(); SECTIONS.len()];
        one_pod(&node, handler, &format!("warm{h}"), 1, &mut warm)?;
    }
    if o.burst {
        for (h, handler) in HANDLERS.iter().enumerate() {
            burst(&node, handler, h, o.pods, o.execs, &mut times[h])?;
        }
    } else {
        for i in 0..o.pods {
            for (h, handler) in HANDLERS.iter().enumerate() {
                one_pod(&node, handler, &format!("p{i}h{h}"), o.execs, &mut times[h])?;
            }
        }
    }
    for (h, handler) in HANDLERS.iter().enumerate() {
        for (s, section) in SECTIONS.iter().enumerate() {
            let path = Path::new(&o.out).join(format!("{}{section}@{handler}.json", o.prefix));
            fs::write(&path, export(handler, &times[h][s]).to_string())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// `pods` pods of `handler` at once, one thread each: every start, `execs` ExecSyncs per pod
/// while all are up, and every stop, each call timed into `times`.
fn burst(
    node: &CriNode,
    handler: &str,
    h: usize,
    pods: usize,
    execs: usize,
    times: &mut [Vec<f64>],
) -> Result<()> {
    let started: Vec<Result<(String, String, f64)>> = std::thread::scope(|s| {
        let all: Vec<_> = (0..pods)
            .map(|i| s.spawn(move || start_pod(node, handler, &format!("b{i}h{h}"))))
            .collect();
        all.into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| bail!("a start thread panicked"))
            })
            .collect()
    });
    let mut up = Vec::new();
    let mut first_error = None;
    for r in started {
        match r {
            Ok((pod, app, secs)) => {
                times[0].push(secs);
                up.push((pod, app));
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let execd: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let all: Vec<_> = up
            .iter()
            .map(|(_, app)| s.spawn(move || exec_times(node, handler, app, execs)))
            .collect();
        all.into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| bail!("an exec thread panicked"))
            })
            .collect()
    });
    for r in execd {
        match r {
            Ok(t) => times[1].extend(t),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let stopped: Vec<Result<f64>> = std::thread::scope(|s| {
        let all: Vec<_> = up
            .iter()
            .map(|(pod, _)| s.spawn(move || stop_pod(node, pod)))
            .collect();
        all.into_iter()
            .map(|t| t.join().unwrap_or_else(|_| bail!("a stop thread panicked")))
            .collect()
    });
    for r in stopped {
        match r {
            Ok(secs) => times[2].push(secs),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// RunPodSandbox + CreateContainer + StartContainer of a `sleep`: (pod, container, seconds).
fn start_pod(node: &CriNode, handler: &str, tag: &str) -> Result<(String, String, f64)> {
    let cri = node.cri();
    let uid = format!("bench-{tag}-{}", std::process::id());
    let parent = node.pod_cgroup("besteffort", &uid, 2)?;
    let pod_cfg = node.pod_config(&format!("bench-{tag}"), &uid, &parent);
    fs::create_dir_all(node.pod_log_dir(&format!("bench-{tag}"), &uid))?;
    let app_cfg = container_config("app", IMAGE, &["sleep", "3600"], None);
    let t = Instant::now();
    let pod = cri.run_pod_sandbox(&pod_cfg, handler)?;
    let app = cri.create_container(&pod, &app_cfg, &pod_cfg)?;
    cri.start_container(&app)?;
    Ok((pod, app, t.elapsed().as_secs_f64()))
}

/// `execs` ExecSyncs of `/bin/true` into `app`, each timed.
fn exec_times(node: &CriNode, handler: &str, app: &str, execs: usize) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(execs);
    for _ in 0..execs {
        let t = Instant::now();
        let resp = node.cri().exec_sync(app, &["/bin/true"], 20)?;
        times.push(t.elapsed().as_secs_f64());
        if resp.exit_code != 0 {
            bail!("{handler}: ExecSync of /bin/true exited {}", resp.exit_code);
        }
    }
    Ok(times)
}

/// StopPodSandbox + RemovePodSandbox, timed.
fn stop_pod(node: &CriNode, pod: &str) -> Result<f64> {
    let t = Instant::now();
    node.cri().stop_pod_sandbox(pod)?;
    node.cri().remove_pod_sandbox(pod)?;
    Ok(t.elapsed().as_secs_f64())
}

/// One pod of `handler`: its start, `execs` ExecSyncs and its teardown, each timed into `times`.
fn one_pod(
    node: &CriNode,
    handler: &str,
    tag: &str,
    execs: usize,
    times: &mut [Vec<f64>],
) -> Result<()> {
    let (pod, app, secs) = start_pod(node, handler, tag)?;
    times[0].push(secs);
    times[1].extend(exec_times(node, handler, &app, execs)?);
    times[2].push(stop_pod(node, &pod)?);
    Ok(())
}

/// The fields of a hyperfine `--export-json` that report.sh reads (no CPU times: `null`).
fn export(name: &str, times: &[f64]) -> serde_json::Value {
    let n = times.len().max(1) as f64;
    let mean = times.iter().sum::<f64>() / n;
    let var = times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => 0.0,
        l if l % 2 == 1 => sorted[l / 2],
        l => (sorted[l / 2 - 1] + sorted[l / 2]) / 2.0,
    };
    json!({"results": [{
        "command": name, "mean": mean, "stddev": var.sqrt(), "median": median,
        "min": sorted.first().copied().unwrap_or(0.0), "max": sorted.last().copied().unwrap_or(0.0),
        "user": null, "system": null, "times": times,
    }]})
}
