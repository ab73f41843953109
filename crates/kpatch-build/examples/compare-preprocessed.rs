//! compare-preprocessed ORIG.i PATCHED.i: what the header filter says of one unit preprocessed
//! without and with a patch (kpatch_build::preprocessed::compare), and how long it took.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [orig, patched] = args.as_slice() else {
        eprintln!("usage: compare-preprocessed ORIG.i PATCHED.i");
        return ExitCode::from(2);
    };
    let read = |p: &str| match std::fs::read(p) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) => Err(format!("{p}: {e}")),
    };
    let (a, b) = match (read(orig), read(patched)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("compare-preprocessed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let t = std::time::Instant::now();
    let verdict = kpatch_build::preprocessed::compare(&a, &b);
    println!("{verdict:?} ({:.1} ms)", t.elapsed().as_secs_f64() * 1000.0);
    ExitCode::SUCCESS
}
