//! The GPU frame kernels (`src/cuda/kernels.cu`) checked against the CPU reference
//! ([`crate::frame`]) without a GPU: the same source is compiled for the host with the system's
//! C++ compiler (`src/cuda/host_shim.cpp` runs each simulated thread in turn) and must give the
//! reference's bytes and floats exactly, for every format, odd sizes and each `multiple_of`. This
//! checks the kernels' arithmetic and indexing; launching them on a GPU (`tests/gpu.rs`) is still
//! needed to check the device plumbing. Skipped, with a message, where no C++ compiler is found.

use std::ffi::{c_int, c_longlong};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::frame::{
    self, FrameLayout, PixelFormat, YuvColorimetry, YuvMatrix, frame_to_tensor, tensor_to_frame,
};

type PackedIn = unsafe extern "C" fn(
    c_longlong,
    *const u8,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    *mut f32,
);
type YuvIn = unsafe extern "C" fn(
    c_longlong,
    *const u8,
    c_int,
    *const u8,
    *const u8,
    c_int,
    c_int,
    *const f32,
    c_int,
    c_int,
    c_int,
    c_int,
    *mut f32,
);
type PackedOut = unsafe extern "C" fn(
    c_longlong,
    *const f32,
    c_int,
    c_int,
    *mut u8,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
);
type YuvOut = unsafe extern "C" fn(
    c_longlong,
    *const f32,
    c_int,
    c_int,
    *mut u8,
    c_int,
    *mut u8,
    *mut u8,
    c_int,
    c_int,
    *const f32,
    c_int,
    c_int,
);
type AbsDiff = unsafe extern "C" fn(
    c_longlong,
    *const f32,
    *const f32,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    *mut f64,
);

/// Builds the host version of the kernels; `None` (after saying why) without a compiler.
fn build(dir: &Path) -> Option<libloading::Library> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda");
    let lib = dir.join("libderain_kernels_host.so");
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = std::process::Command::new(&compiler)
        .args(["-std=c++17", "-O1", "-ffp-contract=off", "-fPIC", "-shared"])
        .arg("-I")
        .arg(&src)
        .arg(src.join("host_shim.cpp"))
        .arg("-o")
        .arg(&lib)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the kernels do not compile as C++: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            eprintln!("skipping: no C++ compiler ({compiler}: {e}); kernels unchecked on the CPU");
            return None;
        }
    }
    // SAFETY: the library was just built from our own source; its initialisers do nothing.
    Some(unsafe { libloading::Library::new(&lib) }.expect("the host kernels load"))
}

/// Tightly packed copies of strided planes (what `CudaFrames::upload` puts on the device).
fn tight(layout: &FrameLayout, planes: &[Vec<u8>]) -> Vec<Vec<u8>> {
    planes
        .iter()
        .enumerate()
        .map(|(p, data)| {
            let (row, rows) = layout.plane_geometry(p).unwrap();
            let stride = if rows > 1 { layout.strides[p] } else { row };
            (0..rows)
                .flat_map(|r| data[r * stride..][..row].iter().copied())
                .collect()
        })
        .collect()
}

/// Tight planes back into strided ones (what `CudaFrames::download` does).
fn untight(layout: &FrameLayout, tight: &[Vec<u8>], planes: &mut [Vec<u8>]) {
    for (p, data) in planes.iter_mut().enumerate() {
        let (row, rows) = layout.plane_geometry(p).unwrap();
        let stride = if rows > 1 { layout.strides[p] } else { row };
        for r in 0..rows {
            data[r * stride..][..row].copy_from_slice(&tight[p][r * row..][..row]);
        }
    }
}

#[test]
fn kernels_match_the_cpu_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(lib) = build(tmp.path()) else {
        return;
    };
    // SAFETY: the symbols are the shim's launchers, with exactly these signatures.
    let (packed_in, yuv_in, packed_out, yuv_out, abs_diff) = unsafe {
        (
            *lib.get::<PackedIn>(b"host_packed_to_tensor\0").unwrap(),
            *lib.get::<YuvIn>(b"host_yuv_to_tensor\0").unwrap(),
            *lib.get::<PackedOut>(b"host_tensor_to_packed\0").unwrap(),
            *lib.get::<YuvOut>(b"host_tensor_to_yuv\0").unwrap(),
            *lib.get::<AbsDiff>(b"host_abs_diff_rows\0").unwrap(),
        )
    };
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let sizes = [
        (1, 1),
        (1, 7),
        (7, 1),
        (2, 2),
        (3, 5),
        (5, 3),
        (33, 17),
        (161, 91),
    ];
    let colorimetries = [
        YuvColorimetry::default(),
        YuvColorimetry {
            matrix: YuvMatrix::Bt709,
            full_range: true,
        },
        YuvColorimetry {
            matrix: YuvMatrix::Bt2020,
            full_range: false,
        },
    ];
    let mut cases = 0;
    for format in PixelFormat::ALL {
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let mut layout = FrameLayout::packed(format, w, h)
                .with_colorimetry(colorimetries[i % colorimetries.len()]);
            for s in &mut layout.strides[..format.n_planes()] {
                *s = s.next_multiple_of(4) + 3;
            }
            let planes: Vec<Vec<u8>> = (0..format.n_planes())
                .map(|p| (0..layout.plane_len(p)).map(|_| rng.random()).collect())
                .collect();
            let refs: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
            let dev = tight(&layout, &planes);
            let pitch = |p: usize| layout.plane_geometry(p).unwrap().0 as c_int;
            let (wi, hi) = (w as c_int, h as c_int);
            for multiple_of in [1, 4, 8] {
                let n = layout.tensor_len(multiple_of).unwrap();
                let mut want = vec![0.0f32; n];
                let (hp, wp) = frame_to_tensor(&layout, &refs, multiple_of, &mut want).unwrap();
                let mut got = vec![f32::NAN; n];
                let threads = (hp * wp) as c_longlong;
                let (wpi, hpi) = (wp as c_int, hp as c_int);
                // SAFETY: buffers are sized for these geometries, as CudaFrames sizes them.
                unsafe {
                    if format.is_yuv() {
                        let lut = frame::yuv_decode_tables(layout.colorimetry);
                        let nv12 = format == PixelFormat::Nv12;
                        let v = if nv12 {
                            dev[1].as_ptr()
                        } else {
                            dev[2].as_ptr()
                        };
                        yuv_in(
                            threads,
                            dev[0].as_ptr(),
                            pitch(0),
                            dev[1].as_ptr(),
                            v,
                            pitch(1),
                            c_int::from(nv12),
                            lut.as_ptr(),
                            wi,
                            hi,
                            wpi,
                            hpi,
                            got.as_mut_ptr(),
                        );
                    } else {
                        let bpp = format.bytes_per_pixel().unwrap() as c_int;
                        let [r, g, b] = format.rgb_offsets().unwrap().map(|o| o as c_int);
                        packed_in(
                            threads,
                            dev[0].as_ptr(),
                            pitch(0),
                            bpp,
                            r,
                            g,
                            b,
                            wi,
                            hi,
                            wpi,
                            hpi,
                            got.as_mut_ptr(),
                        );
                    }
                }
                let differ = want
                    .iter()
                    .zip(&got)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    differ, 0,
                    "{format} {w}x{h} /{multiple_of}: {differ} floats differ"
                );

                // Back, from a tensor with values outside [0,1] and a NaN.
                let t: Vec<f32> = (0..n)
                    .map(|j| {
                        if j == 3 {
                            f32::NAN
                        } else {
                            rng.random_range(-0.2..1.2)
                        }
                    })
                    .collect();
                let mut want_planes = planes.clone();
                {
                    let mut m: Vec<&mut [u8]> =
                        want_planes.iter_mut().map(Vec::as_mut_slice).collect();
                    tensor_to_frame(&t, hp, wp, &layout, &mut m).unwrap();
                }
                let mut dev_out = dev.clone();
                // SAFETY: as above.
                unsafe {
                    if format.is_yuv() {
                        let k = frame::yuv_encode_coefficients(layout.colorimetry);
                        let nv12 = format == PixelFormat::Nv12;
                        let (y, rest) = dev_out.split_at_mut(1);
                        let u = rest[0].as_mut_ptr();
                        let v = if nv12 { u } else { rest[1].as_mut_ptr() };
                        yuv_out(
                            (w.div_ceil(2) * h.div_ceil(2)) as c_longlong,
                            t.as_ptr(),
                            wpi,
                            hpi,
                            y[0].as_mut_ptr(),
                            pitch(0),
                            u,
                            v,
                            pitch(1),
                            c_int::from(nv12),
                            k.as_ptr(),
                            wi,
                            hi,
                        );
                    } else {
                        let bpp = format.bytes_per_pixel().unwrap() as c_int;
                        let [r, g, b] = format.rgb_offsets().unwrap().map(|o| o as c_int);
                        packed_out(
                            (w * h) as c_longlong,
                            t.as_ptr(),
                            wpi,
                            hpi,
                            dev_out[0].as_mut_ptr(),
                            pitch(0),
                            bpp,
                            r,
                            g,
                            b,
                            wi,
                            hi,
                        );
                    }
                }
                let mut got_planes = planes.clone();
                untight(&layout, &dev_out, &mut got_planes);
                assert_eq!(
                    want_planes, got_planes,
                    "{format} {w}x{h} /{multiple_of}: frames differ"
                );

                // The rain level.
                let want_level = crate::runtime::mean_abs_diff(&want, &t, hp, wp, h, w, 4);
                let mut level = 0.0f64;
                let rows = h.div_ceil(4);
                // SAFETY: both tensors hold 3*hp*wp floats.
                unsafe {
                    abs_diff(
                        (3 * rows) as c_longlong,
                        want.as_ptr(),
                        t.as_ptr(),
                        hpi,
                        wpi,
                        hi,
                        wi,
                        4,
                        &mut level,
                    );
                }
                let level = level / (3 * rows * w.div_ceil(4)) as f64;
                if want_level.is_finite() {
                    assert!(
                        (level - want_level).abs() <= 1e-9 * want_level.abs().max(1.0),
                        "{format} {w}x{h}: rain level {level} vs {want_level}"
                    );
                }
                cases += 1;
            }
        }
    }
    eprintln!("host-compiled GPU kernels matched src/frame.rs exactly in {cases} cases");
}
