//! Differ speed and memory over the shared kpatch corpus: `cargo bench -p kpatch-diff`.
//!
//! Prints, per case, the time to parse both objects, to diff them, to write the output, and the
//! peak resident memory of the case (the kernel's high-water mark, reset before each case), then
//! the totals. Each case runs `ROUNDS` times and reports its fastest round.

use kpatch_diff::{diff, Options, Outcome};
use kpatch_elf::Object;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let dir = std::env::var_os("KPATCH_RS_UNIT_OBJS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/kpatch-unit-objs/x86_64")
        });
    let Ok(tsv) = std::fs::read_to_string(dir.join("expected.tsv")) else {
        eprintln!("no corpus at {} (set KPATCH_RS_UNIT_OBJS)", dir.display());
        return;
    };
    let names: Vec<String> = tsv
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .map(str::to_owned)
        .collect();
    println!(
        "{:<42} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "case", "parse ms", "diff ms", "write ms", "total ms", "peak MiB"
    );
    let (mut tp, mut td, mut tw) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut worst = (Duration::ZERO, String::new());
    let mut peak_max = 0;
    for name in &names {
        let orig = std::fs::read(dir.join(format!("{name}.ORIG.o"))).unwrap();
        let patched = std::fs::read(dir.join(format!("{name}.PATCHED.o")))
            .or_else(|_| std::fs::read(dir.join(format!("{name}.PATCHED.FAIL.o"))))
            .unwrap();
        let mut best = (Duration::MAX, Duration::MAX, Duration::MAX);
        reset_peak();
        for _ in 0..ROUNDS {
            let t0 = Instant::now();
            let o = Object::parse(&orig, "ORIG.o").unwrap();
            let p = Object::parse(&patched, "PATCHED.o").unwrap();
            let t1 = Instant::now();
            let r = diff(o, "ORIG.o", p, "PATCHED.o", &Options::default());
            let t2 = Instant::now();
            if let Ok(Outcome::Changed { output, .. }) = &r {
                std::hint::black_box(output.write().unwrap());
            }
            let t3 = Instant::now();
            best.0 = best.0.min(t1 - t0);
            best.1 = best.1.min(t2 - t1);
            best.2 = best.2.min(t3 - t2);
        }
        let peak = peak_rss_kib().unwrap_or(0);
        peak_max = peak_max.max(peak);
        let total = best.0 + best.1 + best.2;
        if total > worst.0 {
            worst = (total, name.clone());
        }
        tp += best.0;
        td += best.1;
        tw += best.2;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<42} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
            name,
            ms(best.0),
            ms(best.1),
            ms(best.2),
            ms(total),
            peak as f64 / 1024.0
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "TOTAL {} cases: parse {:.1} ms, diff {:.1} ms, write {:.1} ms, all {:.1} ms; slowest case {} at {:.2} ms; peak RSS {:.1} MiB",
        names.len(),
        ms(tp),
        ms(td),
        ms(tw),
        ms(tp + td + tw),
        worst.1,
        ms(worst.0),
        peak_max as f64 / 1024.0
    );
}
