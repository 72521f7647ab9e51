//! Reading frames from recorded drives (video files through GStreamer, image folders).
