//! The CRI half of `scripts/bench.sh`: what a kubelet waits for, through a private containerd
//! with its CRI plugin ([`CriNode`]), skiff's handler against containerd's runc handler.
//!
//! ```text
//! cri-bench OUT_DIR [PODS] [EXECS]
//! ```
//!
//! For each handler, `PODS` pods one after the other (the handlers alternate pod by pod, so load
//! drifts hit both alike): RunPodSandbox + CreateContainer + StartContainer of a `sleep`, then
//! `EXECS` ExecSync of `/bin/true` into it, then StopPodSandbox + RemovePodSandbox. Each is
//! timed on its own and written as a hyperfine-shaped export to
//! `OUT_DIR/<section>@<handler>.json` (sections `cri-start`, `cri-exec`, `cri-stop`), which
//! `scripts/bench/report.sh` merges into rows. Only wall times: the work happens in containerd
//! and the shims, not in this process. Dropping the node removes whatever is left.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use skiff_integration::containerd::IMAGE;
use skiff_integration::cri::{container_config, CriNode, RUNC_HANDLER, SKIFF_HANDLER};

const HANDLERS: [&str; 2] = [SKIFF_HANDLER, RUNC_HANDLER];
const SECTIONS: [&str; 3] = ["cri-start", "cri-exec", "cri-stop"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(out) = args.get(1) else {
        bail!("usage: cri-bench OUT_DIR [PODS] [EXECS]");
    };
    let number = |i: usize, default: usize| -> Result<usize> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse()
                .with_context(|| format!("argument {i}: {s:?} is not a number"))
        })
    };
    let (pods, execs) = (number(2, 5)?, number(3, 20)?);
    if pods < 2 || execs < 2 {
        bail!("PODS and EXECS must be at least 2 (a standard deviation needs two runs)");
    }
    let node = CriNode::start()?;
    // times[handler][section]: seconds.
    let mut times = vec![vec![Vec::new(); SECTIONS.len()]; HANDLERS.len()];
    // One untimed pod per handler first: the image unpack and first shim start are not the
    // steady state.
    for (h, handler) in HANDLERS.iter().enumerate() {
        let mut warm = vec![Vec::new(); SECTIONS.len()];
        one_pod(&node, handler, &format!("warm{h}"), 1, &mut warm)?;
    }
    for i in 0..pods {
        for (h, handler) in HANDLERS.iter().enumerate() {
            one_pod(&node, handler, &format!("p{i}h{h}"), execs, &mut times[h])?;
        }
    }
    for (h, handler) in HANDLERS.iter().enumerate() {
        for (s, section) in SECTIONS.iter().enumerate() {
            let path = Path::new(out).join(format!("{section}@{handler}.json"));
            fs::write(&path, export(handler, &times[h][s]).to_string())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// One pod of `handler`: its start, `execs` ExecSyncs and its teardown, each timed into `times`.
fn one_pod(
    node: &CriNode,
    handler: &str,
    tag: &str,
    execs: usize,
    times: &mut [Vec<f64>],
) -> Result<()> {
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
    times[0].push(t.elapsed().as_secs_f64());

    for _ in 0..execs {
        let t = Instant::now();
        let resp = cri.exec_sync(&app, &["/bin/true"], 20)?;
        times[1].push(t.elapsed().as_secs_f64());
        if resp.exit_code != 0 {
            bail!("{handler}: ExecSync of /bin/true exited {}", resp.exit_code);
        }
    }

    let t = Instant::now();
    cri.stop_pod_sandbox(&pod)?;
    cri.remove_pod_sandbox(&pod)?;
    times[2].push(t.elapsed().as_secs_f64());
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
