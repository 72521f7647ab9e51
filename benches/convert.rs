//! Frame ⇄ tensor conversion speed on one core: `cargo bench --bench convert`.
//!
//! Times `frame_to_tensor` and `tensor_to_frame` for 1280x720 and 640x360 frames in RGB, BGRx,
//! I420 and NV12 (multiple_of 4, GStreamer-style strides rounded up to 4 bytes), and reports the
//! median and p90 milliseconds per frame. The goal (docs/ARCHITECTURE.md, The frame's path) is at
//! most 2 ms per 1280x720 RGB frame in each direction.

use std::hint::black_box;
use std::time::Instant;

use derain::frame::{FrameLayout, PixelFormat, frame_to_tensor, padded_size, tensor_to_frame};

const WARMUP: usize = 20;
const ITERATIONS: usize = 200;
const MULTIPLE_OF: u32 = 4;
const GOAL_MS: f64 = 2.0;

struct Stats {
    median: f64,
    p90: f64,
}

/// Runs `f` WARMUP times, then ITERATIONS timed times; milliseconds per call.
fn time(mut f: impl FnMut()) -> Stats {
    for _ in 0..WARMUP {
        f();
    }
    let mut ms: Vec<f64> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Stats {
        median: ms[ms.len() / 2],
        p90: ms[ms.len() * 9 / 10],
    }
}

/// A layout with each plane's stride rounded up to 4 bytes, as GStreamer allocates them.
fn layout(format: PixelFormat, width: usize, height: usize) -> FrameLayout {
    let mut layout = FrameLayout::packed(format, width, height);
    for stride in &mut layout.strides {
        *stride = stride.next_multiple_of(4);
    }
    layout
}

/// Plane buffers filled with smooth content plus a little pseudo-random texture.
fn planes(layout: &FrameLayout) -> Vec<Vec<u8>> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    (0..layout.format.n_planes())
        .map(|p| {
            (0..layout.plane_len(p))
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((i / 7 % 200) as u64 + (seed & 31) + 16) as u8
                })
                .collect()
        })
        .collect()
}

fn main() {
    let mut rgb_720p = None;
    for (width, height) in [(1280, 720), (640, 360)] {
        for format in [
            PixelFormat::Rgb,
            PixelFormat::Bgrx,
            PixelFormat::I420,
            PixelFormat::Nv12,
        ] {
            let layout = layout(format, width, height);
            let src = planes(&layout);
            let src_refs: Vec<&[u8]> = src.iter().map(Vec::as_slice).collect();
            let (hp, wp) = padded_size(height, width, MULTIPLE_OF);
            let mut tensor = vec![0.0f32; 3 * hp * wp];

            let to_tensor = time(|| {
                frame_to_tensor(&layout, black_box(&src_refs), MULTIPLE_OF, &mut tensor)
                    .expect("frame_to_tensor");
                black_box(&mut tensor);
            });
            let mut dst = src.clone();
            let from_tensor = time(|| {
                let mut dst_refs: Vec<&mut [u8]> = dst.iter_mut().map(Vec::as_mut_slice).collect();
                tensor_to_frame(black_box(&tensor), hp, wp, &layout, &mut dst_refs)
                    .expect("tensor_to_frame");
                black_box(&mut dst);
            });
            for (what, s) in [
                ("frame_to_tensor", &to_tensor),
                ("tensor_to_frame", &from_tensor),
            ] {
                println!(
                    "{what}  {width:>4}x{height:<4} {:<5} median {:7.3} ms  p90 {:7.3} ms",
                    format.name(),
                    s.median,
                    s.p90
                );
            }
            if (width, height, format) == (1280, 720, PixelFormat::Rgb) {
                rgb_720p = Some((to_tensor.median, from_tensor.median));
            }
        }
    }
    if let Some((to, from)) = rgb_720p {
        let verdict = |ms: f64| if ms <= GOAL_MS { "meets" } else { "MISSES" };
        println!(
            "1280x720 RGB vs the {GOAL_MS} ms goal (median, one core): frame_to_tensor {} ({to:.3} \
             ms), tensor_to_frame {} ({from:.3} ms)",
            verdict(to),
            verdict(from)
        );
    }
}
