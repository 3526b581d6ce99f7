//! What masking one log line costs: `Masker::mask` over typical task output with 0, 1 and 10
//! secrets (each with its base64 and percent-encoded forms), lines with and without a secret.
//! Prints ns per line; the pipeline-throughput figures put it next to a task's cost.

use std::hint::black_box;
use std::time::Instant;

use drover_core::vars::Masker;

fn main() {
    let secrets: Vec<String> = (0..10).map(|i| format!("s3cret-value-{i}-{}", "x".repeat(i * 3))).collect();
    let clean = "2026-12-03T07:00:00Z INFO deploying release 1.4.2 to /srv/shop/releases/1.4.2 (12 files)";
    let dirty = format!("connecting with password {} to db.prod:5432", secrets[0]);
    const LINES: usize = 1_000_000;
    println!("masking: ns per log line, {LINES} lines each");
    for n in [0, 1, 10] {
        let m = Masker::new(secrets[..n].iter().map(String::as_str));
        for (what, line) in [("clean", clean), ("with a secret", dirty.as_str())] {
            let start = Instant::now();
            let mut bytes = 0;
            for _ in 0..LINES {
                bytes += m.mask(black_box(line)).len();
            }
            let ns = start.elapsed().as_nanos() as f64 / LINES as f64;
            black_box(bytes);
            println!("{n:>2} secrets, {what:<14} line of {:>3} bytes: {ns:>7.1} ns", line.len());
        }
    }
}
