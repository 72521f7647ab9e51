//! Sessions opened and closed from many threads (a pipeline restarting gets new streaming threads
//! each time) must not leave their memory behind: a test of its own, since it reads this
//! process's resident memory.

use derain::model::Model;
use derain::onnx::fixtures;
use derain::runtime::{Generator, Provider, SessionOptions};

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Opens a session in a new thread, runs it twice on a 320x240 frame and closes it there.
fn session_in_a_thread(model: &Model) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let options = SessionOptions {
                provider: Provider::Cpu,
                threads: 1,
                ..SessionOptions::default()
            };
            let mut g = Generator::new(model, &options).expect("session");
            let x = vec![0.5_f32; 3 * 240 * 320];
            for _ in 0..2 {
                g.run(&x, 240, 320, |_| ()).expect("run");
            }
        });
    });
}

#[test]
fn closed_sessions_leave_no_resident_memory_behind() {
    if let Err(e) = derain::runtime::init_ort(None) {
        eprintln!("skipping: {e}");
        return;
    }
    let model = Model::from_bytes(fixtures::slow_conv(1, 1), "slow_conv").expect("model");
    for _ in 0..3 {
        session_in_a_thread(&model);
    }
    let before = rss_mb();
    // More threads than glibc makes malloc arenas on this machine (8 per core).
    let threads = 8 * std::thread::available_parallelism().map_or(2, |n| n.get()) + 4;
    for _ in 0..threads {
        session_in_a_thread(&model);
    }
    let after = rss_mb();
    eprintln!("{threads} sessions in {threads} threads: RSS {before:.1} -> {after:.1} MB");
    // Each session's arena holds about 10 MB of activations at this size; one retained per
    // thread arena would add well over 50 MB.
    assert!(
        after - before < 15.0,
        "resident memory grew from {before:.1} to {after:.1} MB"
    );
}
