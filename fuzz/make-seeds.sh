#!/usr/bin/env bash
# Rebuilds the committed seed corpus (fuzz/seeds/<target>/): a few small valid inputs per target,
# from which the fuzzer mutates. Needs the built `derain` CLI (for ONNX fixtures) and GStreamer's
# encoders (pngenc, jpegenc, avenc_bmp, x264enc, vp8enc and the muxers). Run from the repo root:
#   cargo build --bin derain && fuzz/make-seeds.sh
set -euo pipefail
cd "$(dirname "$0")"
seeds=seeds
derain=${DERAIN:-../target/debug/derain}
rm -rf "$seeds"
mkdir -p "$seeds"/{model_card,onnx_model,frame_conversion,detector_output,footage_image,footage_video}

# Model cards: complete, minimal, with unknown keys, and broken.
printf '%s' '{"name":"derain-r9","architecture":"resnet9(base=16)","multiple_of":4,"parameters":720000,"gmac_per_megapixel":12.5,"training":{"steps":1000,"seed":3},"scores":{"psnr_y":30.1},"licence":"MIT"}' > $seeds/model_card/full.json
printf '%s' '{"name":"n"}' > $seeds/model_card/minimal.json
printf '%s' '{"name":"x","multiple_of":8,"future":[1,2,{"a":null}],"nested":{"k":1e300}}' > $seeds/model_card/extra.json
printf '%s' '{"name": 3, "multiple_of": -1' > $seeds/model_card/broken.json

# ONNX generators written by the library's fixture writer.
"$derain" fixture identity --multiple-of 4 --out $seeds/onnx_model/identity.onnx > /dev/null
"$derain" fixture affine --out $seeds/onnx_model/affine.onnx > /dev/null
"$derain" fixture small-conv --out $seeds/onnx_model/small_conv.onnx > /dev/null

# Frames: format index, then size and layout bytes (see targets.rs), then pixel bytes.
python3 - "$seeds/frame_conversion" <<'PY'
import random, sys
random.seed(2)
for f in [0, 2, 4, 6, 10, 11]:
    head = bytes([f, 16, 3, 12, 5, 4, 1, 0, 2, 3, 4, 1])
    body = bytes(random.randrange(256) for _ in range(300))
    open(f"{sys.argv[1]}/format{f}", "wb").write(head + body)
PY

# Detector outputs: input 64x64 (grid 84), shapes [1,84,7] (YOLOX), [1,300,7] (YOLOv5),
# [1,6,84] (YOLOv8), threshold 0.25, then float values.
python3 - "$seeds/detector_output" <<'PY'
import struct, sys, random
random.seed(1)
out = sys.argv[1]
def size(v, small):
    # Bytes::size in targets.rs: bytes (b, x) with b >= 2 read as (b*7 + x) % small.
    for b in range(2, 256):
        for x in range(256):
            if (b * 7 + x) % small == v:
                return bytes([b, x])
    raise ValueError(v)
for name, shape, layout in [("yolox", [1, 84, 7], 1), ("yolov5", [1, 300, 7], 2),
                            ("yolov8", [1, 6, 84], 3), ("guess", [1, 84, 7], 0)]:
    data = bytearray(size(64, 700) + size(64, 700) + bytes([len(shape)]))
    for d in shape:
        data += size(d, 400)
    data += struct.pack('<f', 0.25) + bytes([layout])
    data += size(128, 2000) + size(64, 2000) + bytes([0])  # a 128x64 frame, centre padding
    data += struct.pack('<f', 0.45) + bytes([100])         # IoU threshold, max detections
    n = 1
    for d in shape:
        n *= d
    for i in range(n):
        data += struct.pack('<f', random.choice([0.0, 0.1, 0.5, 0.9, 2.0, 30.0, -1.0, random.random()]))
    open(f"{out}/{name}", "wb").write(data)
PY

# Images (first byte picks the extension: 0 png, 1 jpg, 3 bmp).
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
gst-launch-1.0 -q videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,width=16,height=12 ! videoconvert ! pngenc ! filesink location=$tmp/a.png
gst-launch-1.0 -q videotestsrc num-buffers=1 pattern=ball ! video/x-raw,width=16,height=12 ! videoconvert ! jpegenc ! filesink location=$tmp/a.jpg
gst-launch-1.0 -q videotestsrc num-buffers=1 pattern=snow ! video/x-raw,width=8,height=6 ! videoconvert ! avenc_bmp ! filesink location=$tmp/a.bmp
{ printf '\x00'; cat $tmp/a.png; } > $seeds/footage_image/png
{ printf '\x01'; cat $tmp/a.jpg; } > $seeds/footage_image/jpg
{ printf '\x03'; cat $tmp/a.bmp; } > $seeds/footage_image/bmp

# Videos, 32x24, 4 frames (first byte picks the extension: 0 mp4, 1 mkv, 2 avi, 3 h264, 4 ts).
src="videotestsrc num-buffers=4 pattern=ball ! video/x-raw,width=32,height=24,framerate=10/1 ! videoconvert"
gst-launch-1.0 -q $src ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location=$tmp/a.mp4
gst-launch-1.0 -q $src ! vp8enc ! matroskamux ! filesink location=$tmp/a.mkv
gst-launch-1.0 -q $src ! jpegenc ! avimux ! filesink location=$tmp/a.avi
gst-launch-1.0 -q $src ! x264enc speed-preset=ultrafast ! video/x-h264,stream-format=byte-stream ! filesink location=$tmp/a.h264
gst-launch-1.0 -q $src ! x264enc speed-preset=ultrafast ! mpegtsmux ! filesink location=$tmp/a.ts
i=0
for ext in mp4 mkv avi h264 ts; do
  { printf "\\x$(printf %02x $i)"; cat $tmp/a.$ext; } > $seeds/footage_video/$ext
  i=$((i + 1))
done
du -sh $seeds/*
