//! Footage reading through GStreamer: containers, codecs, corrupt files, stride, scene sampling,
//! and the video writer.

use std::path::{Path, PathBuf};

use derain::devdata::shared_path;
use derain::footage::{
    CropSampler, Footage, FootageError, FootageOptions, VideoReader, VideoWriter,
};
use derain::imageio::RgbImage;
use gst::prelude::*;

/// Encodes `frames` frames of a moving test pattern into `path` with the given muxer
/// (`None` = raw H.264 elementary stream).
fn make_video(path: &Path, frames: u32, muxer: Option<&str>, pattern: &str) {
    gst::init().unwrap();
    // A raw elementary stream must be Annex B (start codes), not the avc form muxers take.
    let mux = muxer.map_or("! video/x-h264,stream-format=byte-stream ".into(), |m| {
        format!("! {m} ")
    });
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! \
         video/x-raw,width=160,height=96,framerate=25/1 ! videoconvert ! \
         x264enc speed-preset=ultrafast key-int-max=5 ! h264parse {mux}! filesink name=sink"
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    pipeline
        .by_name("sink")
        .unwrap()
        .set_property("location", path.to_str().unwrap());
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
}

fn read_all(paths: &[PathBuf], options: FootageOptions) -> (Vec<derain::footage::Frame>, Footage) {
    let mut f = Footage::open(paths, options).unwrap();
    let frames = f.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    (frames, f)
}

#[test]
fn containers_and_raw_h264_decode_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mux) in [
        ("a.mp4", Some("mp4mux")),
        ("b.mkv", Some("matroskamux")),
        ("c.avi", Some("avimux")),
        ("d.h264", None),
    ] {
        let p = dir.path().join(name);
        make_video(&p, 12, mux, "ball");
        let (frames, f) = read_all(std::slice::from_ref(&p), FootageOptions::default());
        assert_eq!(frames.len(), 12, "{name}: {}", f.summary());
        assert_eq!(frames[0].image.dimensions(), (160, 96), "{name}");
        assert_eq!(frames[11].index, 11);
    }
}

#[test]
fn udacity_clip_decodes_38_frames_at_720p() {
    let Some(clip) = shared_path("clean-driving/udacity/highway-1280x720.mp4") else {
        eprintln!("skipped: ../shared/data/clean-driving/udacity/highway-1280x720.mp4 is absent");
        return;
    };
    let (frames, f) = read_all(std::slice::from_ref(&clip), FootageOptions::default());
    assert_eq!(frames.len(), 38, "{}", f.summary());
    assert!(frames.iter().all(|fr| fr.image.dimensions() == (1280, 720)));
    // Timestamps at 25 fps.
    assert_eq!(frames[1].pts.unwrap() - frames[0].pts.unwrap(), 40_000_000);
}

#[test]
fn truncated_video_is_skipped_and_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (good, frames_in_good) = match shared_path("clean-driving/udacity/highway-1280x720.mp4") {
        Some(p) => (p, 38),
        None => {
            eprintln!("note: Udacity clip absent; truncating a generated clip instead");
            let p = dir.path().join("gen.mp4");
            make_video(&p, 20, Some("mp4mux"), "ball");
            (p, 20)
        }
    };
    let bytes = std::fs::read(&good).unwrap();
    // mp4mux writes the index (moov) at the end: the first 40% hold frames but no index.
    let cut = dir.path().join("truncated.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 5]).unwrap();
    let garbage = dir.path().join("garbage.mkv");
    std::fs::write(&garbage, vec![0x5a; 4096]).unwrap();
    let (frames, f) = read_all(
        &[cut.clone(), good.clone(), garbage.clone()],
        FootageOptions::default(),
    );
    let s = f.summary();
    // The cut file is noticed (its frames stop long before the announced duration) and counted;
    // the whole frames decoded before the cut are kept, the good file is read in full.
    let damaged: Vec<&PathBuf> = s.sources_damaged.iter().map(|(p, _)| p).collect();
    assert_eq!(damaged, [&cut], "{s:?}");
    assert!(s.sources_damaged[0].1.contains("cut short"), "{s:?}");
    let skipped: Vec<&PathBuf> = s.sources_skipped.iter().map(|(p, _)| p).collect();
    assert_eq!(skipped, [&garbage], "{s:?}");
    assert_eq!(s.sources_read, 1);
    let from_good = frames.iter().filter(|fr| *fr.source == good).count();
    assert_eq!(from_good, frames_in_good, "{s}");
    assert!(frames.len() < 2 * frames_in_good);

    // Only unreadable sources: one error naming them.
    let mut only_bad = Footage::open(&[garbage], FootageOptions::default()).unwrap();
    let err = only_bad.next().unwrap().unwrap_err();
    assert!(
        matches!(err, FootageError::NoFrames { skipped: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("garbage.mkv"), "{err}");
}

#[test]
fn stride_max_frames_and_scene_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let moving = dir.path().join("moving.mp4");
    make_video(&moving, 20, Some("mp4mux"), "ball");
    let still = dir.path().join("still.mp4");
    make_video(&still, 20, Some("mp4mux"), "smpte");

    let (frames, _) = read_all(
        std::slice::from_ref(&moving),
        FootageOptions {
            stride: 3,
            ..FootageOptions::default()
        },
    );
    let idx: Vec<u64> = frames.iter().map(|f| f.index).collect();
    assert_eq!(idx, [0, 3, 6, 9, 12, 15, 18]);

    let (frames, _) = read_all(
        &[moving.clone(), still.clone()],
        FootageOptions {
            max_frames: Some(25),
            ..FootageOptions::default()
        },
    );
    assert_eq!(frames.len(), 25);

    // A static test card is one scene (its frame-to-frame distance is x264 noise, about 1.2 to
    // 1.5): only its first frame survives; a moving ball (about 2.3 to 2.8) keeps every frame.
    let sampled = FootageOptions {
        min_scene_change: Some(2.0),
        ..FootageOptions::default()
    };
    let (frames, f) = read_all(std::slice::from_ref(&still), sampled.clone());
    assert_eq!(frames.len(), 1, "{}", f.summary());
    assert_eq!(f.summary().frames_similar, 19);
    let (frames, _) = read_all(std::slice::from_ref(&moving), sampled);
    assert_eq!(frames.len(), 20);
}

#[test]
fn writer_round_trip_keeps_count_size_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    // Odd size on purpose.
    let mut w = VideoWriter::create(&out, 101, 67, 25).unwrap();
    for i in 0..15u64 {
        let img = RgbImage::from_fn(101, 67, |x, y| {
            image::Rgb([(x * 2 + i as u32 * 5) as u8, (y * 3) as u8, 128])
        });
        w.push(&img, Some(1_000_000_000 + i * 40_000_000), Some(40_000_000))
            .unwrap();
    }
    assert!(
        !out.exists(),
        "the final name appears only when the file is complete"
    );
    w.finish().unwrap();
    let mut r = VideoReader::open(&out).unwrap();
    let mut pts = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        // Odd sizes get one black column/row (x264 needs even sizes), never a rescale.
        assert_eq!(f.image.dimensions(), (102, 68));
        let luma = |[r, g, b]: [u8; 3]| 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
        assert!(
            luma(f.image.get_pixel(101, 30).0) < 40.0,
            "{:?}",
            f.image.get_pixel(101, 30)
        );
        // Not rescaled: a pixel keeps its value (within H.264 loss) at its place.
        let got = f.image.get_pixel(50, 30).0;
        let i = (f.pts.unwrap() / 40_000_000) as u32;
        let want = [(50 * 2 + i * 5) as u8, 90, 128];
        assert!(
            got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 12),
            "{got:?} vs {want:?}"
        );
        pts.push(f.pts.unwrap());
    }
    assert_eq!(pts.len(), 15);
    // MP4 starts its timeline at zero; the spacing of the frames is kept.
    assert!(pts.windows(2).all(|w| w[1] - w[0] == 40_000_000), "{pts:?}");
}

#[test]
fn writer_rejects_an_unwritable_path_before_any_frame() {
    let err = VideoWriter::create(Path::new("/proc/no/such/dir/out.mp4"), 64, 64, 25)
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("out.mp4"), "{err}");
}

#[test]
fn crop_sampler_reads_video_endlessly() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    make_video(&clip, 6, Some("mp4mux"), "ball");
    let mut s = CropSampler::new(vec![clip], FootageOptions::default(), 64, 2, 7).unwrap();
    for _ in 0..30 {
        assert_eq!(s.next_crop().unwrap().dimensions(), (64, 64));
    }
    assert_eq!(s.epoch(), 2);
}

#[test]
fn a_list_mixes_videos_and_images() {
    let dir = tempfile::tempdir().unwrap();
    make_video(
        &dir.path().join("drive.mkv"),
        5,
        Some("matroskamux"),
        "ball",
    );
    std::fs::create_dir(dir.path().join("stills")).unwrap();
    derain::imageio::save_png_atomic(
        &RgbImage::from_pixel(160, 96, image::Rgb([1, 2, 3])),
        &dir.path().join("stills/a.png"),
    )
    .unwrap();
    let list = dir.path().join("sources.txt");
    std::fs::write(
        &list,
        "# one drive, one folder of stills\ndrive.mkv\nstills\n",
    )
    .unwrap();
    let (frames, f) = read_all(&[list], FootageOptions::default());
    assert_eq!(frames.len(), 6, "{}", f.summary());
    assert_eq!(frames[5].image.get_pixel(0, 0).0, [1, 2, 3]);
    assert_eq!(f.summary().sources, 2);
}
