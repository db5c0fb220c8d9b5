//! `containerd-shim-skiff-v2`: the containerd shim v2 for skiff.
//!
//! The Task service is tracked in the shim issue; until it lands this binary
//! only answers `-v` and refuses every other invocation with a clear error.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-v" || a == "--version") {
        println!("containerd-shim-skiff-v2 version {}", skiff_proto::VERSION);
        return;
    }
    eprintln!("containerd-shim-skiff-v2: the Task service is not implemented yet");
    std::process::exit(1);
}
