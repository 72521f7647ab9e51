//! The `derain` element's hot reload: setting `model` (or a provider setting) while PLAYING opens
//! the new model and session on a loader thread beside the running one, runs it once at the
//! stream's frame size right after a frame boundary, and the streaming thread swaps it in between
//! two frames; the old session closes on a thread of its own. A model that cannot be opened, or
//! cannot take the stream's frames, leaves the running one in place with a warning on the bus.
//! Only the latest request counts: an older one still loading is closed when it finishes.
//!
//! A child module of the element's `imp`, so that it reaches the element's state directly.

use super::*;

/// How long a loader waits for a frame boundary before its warm-up frame: a stream that has
/// stopped flowing must not hold a reload up.
const BOUNDARY_PATIENCE: Duration = Duration::from_millis(100);

/// The frame boundaries the streaming thread passes, so that a loader runs the new session's
/// warm-up frame right after one: in a live stream the element is idle then (a frame takes less
/// than the frame period), so the warm-up takes cores the stream is not using. Written by hand:
/// a counter and a condition variable, which no crate does more simply.
#[derive(Default)]
pub(super) struct Boundaries {
    passed: Mutex<u64>,
    cv: std::sync::Condvar,
}

impl Boundaries {
    /// The streaming thread is between two frames.
    pub(super) fn pass(&self) {
        *lock(&self.passed) += 1;
        self.cv.notify_all();
    }

    /// Waits until the streaming thread next passes a boundary, or `patience` has gone by.
    fn wait_next(&self, patience: Duration) {
        let guard = lock(&self.passed);
        let seen = *guard;
        let _ = self.cv.wait_timeout_while(guard, patience, |n| *n == seen);
    }
}

/// Names the model of `settings` in messages.
fn model_name(settings: &OrtSettings) -> String {
    if settings.model.is_empty() {
        "the embedded default model".to_owned()
    } else {
        format!("'{}'", settings.model)
    }
}

/// The warning text of a refused reload.
fn refusal(generation: u64, wanted: &OrtSettings, e: &OpenError, running: &str) -> String {
    format!(
        "reload {generation}: cannot switch to {}: {}; {running} keeps running",
        model_name(wanted),
        e.reason
    )
}

/// One reload asked for while running.
pub(super) struct Request {
    /// Its number: only the latest request's outcome is used or reported.
    generation: u64,
    settings: OrtSettings,
    /// The stream's frame size (width, height) when asked, if caps are set.
    pub(super) frame: Option<(usize, usize)>,
}

/// The hot reload: at most one loader thread per element opens requested sessions beside the
/// running one; the streaming thread swaps a ready one in at the next frame boundary.
#[derive(Default)]
pub(super) struct Reloads {
    /// Between `start()` (once its session is open) and `stop()`.
    pub(super) running: bool,
    /// The number of the latest request.
    generation: u64,
    /// The latest request not yet taken by the loader (a newer one replaces it: the last wins).
    pub(super) request: Option<Request>,
    /// A session loaded for the latest request (its number), to be swapped in at the next frame.
    ready: Option<(u64, Box<Opened>)>,
    /// The loader thread; `busy` while it runs (once not, it has returned or is returning).
    thread: Option<JoinHandle<()>>,
    busy: bool,
    /// The negotiated frame size (width, height), which a new model must take.
    pub(super) frame: Option<(usize, usize)>,
    /// The thread closing the session a swap replaced (joined at the next swap and at stop).
    closer: Option<JoinHandle<()>>,
}

/// The loader thread: opens the latest request until none is left. A session opened for a
/// request that is no longer the latest is closed here, never swapped in.
fn loader(
    reloads: Arc<Mutex<Reloads>>,
    boundaries: Arc<Boundaries>,
    element: glib::WeakRef<crate::derain::Derain>,
) {
    loop {
        let request = {
            let mut r = lock(&reloads);
            match r.request.take() {
                Some(q) => q,
                None => {
                    r.busy = false;
                    return;
                }
            }
        };
        let outcome = open(&request.settings, request.frame, || {
            boundaries.wait_next(BOUNDARY_PATIENCE)
        });
        let mut r = lock(&reloads);
        let latest = r.running && r.generation == request.generation;
        // The caps changed while it loaded: a model refused at the old size is tried again at
        // the new one (one that took the old size is checked against the new one at the swap).
        let resized = r.frame != request.frame;
        match outcome {
            Err(_) if latest && resized && r.request.is_none() => {
                r.request = Some(Request {
                    frame: r.frame,
                    ..request
                });
            }
            Ok(opened) if latest => {
                r.ready = Some((request.generation, Box::new(opened)));
                if r.request.is_none() {
                    // Done: the thread ends here, so the swap can join it at once.
                    r.busy = false;
                    return;
                }
            }
            Ok(superseded) => {
                drop(r);
                // Closed on this thread, outside the lock.
                drop(superseded);
            }
            Err(e) => {
                drop(r);
                if latest && let Some(element) = element.upgrade() {
                    element
                        .imp()
                        .refuse(request.generation, &request.settings, &e);
                }
            }
        }
    }
}

impl Derain {
    /// Asks for the session `s.session` describes to replace the running one (called with the
    /// settings lock held). Returns a finished loader thread to join, and a warning to post,
    /// once the locks are released.
    pub(super) fn request_reload(
        &self,
        s: &mut Settings,
    ) -> (Option<JoinHandle<()>>, Option<gst::Message>) {
        let settings = &s.session;
        let mut r = lock(&self.reloads);
        if !r.running {
            return (None, None);
        }
        r.generation += 1;
        r.request = Some(Request {
            generation: r.generation,
            settings: settings.clone(),
            frame: r.frame,
        });
        gst::info!(
            CAT,
            imp = self,
            "reload {} requested: {}",
            r.generation,
            model_name(settings)
        );
        // A session loaded for an earlier request is not wanted any more.
        let superseded = r.ready.take();
        let mut finished = None;
        if !r.busy {
            finished = r.thread.take();
            let reloads = Arc::clone(&self.reloads);
            let boundaries = Arc::clone(&self.boundaries);
            let element = self.obj().downgrade();
            match std::thread::Builder::new()
                .name("derain-reload".into())
                .spawn(move || loader(reloads, boundaries, element))
            {
                Ok(handle) => {
                    r.thread = Some(handle);
                    r.busy = true;
                }
                Err(e) => {
                    let generation = r.generation;
                    r.request = None;
                    drop(r);
                    drop(superseded);
                    let e = OpenError::new(
                        Failure::Session,
                        format!("cannot start the loader thread: {e}"),
                    );
                    let running = s.active.as_ref().map(model_name).unwrap_or_default();
                    let text = refusal(generation, &s.session, &e, &running);
                    if let Some(active) = s.active.clone() {
                        s.session = active;
                    }
                    gst::warning!(CAT, imp = self, "{text}");
                    return (finished, Some(e.warning(self.obj().upcast_ref(), &text)));
                }
            }
        }
        drop(r);
        drop(superseded);
        (finished, None)
    }

    /// Cancels any reload in flight or waiting (the running session was asked for again).
    pub(super) fn cancel_reload(&self) {
        let superseded = {
            let mut r = lock(&self.reloads);
            r.generation += 1;
            r.request = None;
            r.ready.take()
        };
        drop(superseded);
    }

    /// A reload that failed (`e`): unless a newer request is pending, the settings go back to
    /// the session that keeps running; the bus gets a warning naming the model and the reason.
    fn refuse(&self, generation: u64, wanted: &OrtSettings, e: &OpenError) {
        {
            let mut s = lock(&self.settings);
            let latest = lock(&self.reloads).generation == generation;
            if latest && let Some(active) = s.active.clone() {
                s.session = active;
            }
        }
        self.warn_refused(generation, wanted, e);
    }

    fn warn_refused(&self, generation: u64, wanted: &OrtSettings, e: &OpenError) {
        let running = {
            let s = lock(&self.settings);
            s.active.as_ref().map(model_name).unwrap_or_default()
        };
        let text = refusal(generation, wanted, e, &running);
        gst::warning!(CAT, imp = self, "{text}");
        self.post(e.warning(self.obj().upcast_ref(), &text));
    }

    /// At a frame boundary (no frame in the network): swaps in a session a reload has made
    /// ready. Returns the old model and session, to be closed once the frame has gone through.
    pub(super) fn swap_if_ready(&self) -> Option<(Model, Derainer)> {
        let (generation, opened, finished) = {
            let mut r = lock(&self.reloads);
            let (generation, opened) = r.ready.take()?;
            // A loader that has nothing left to do is ending (or has ended): joined here, so a
            // swap leaves no thread behind.
            let finished = if r.busy { None } else { r.thread.take() };
            (generation, opened, finished)
        };
        if let Some(t) = finished {
            let _ = t.join();
        }
        let Opened {
            settings,
            model,
            mut derainer,
            why,
            warm,
        } = *opened;
        let gpu_frames = derainer.frame_path();
        let mut guard = lock(&self.state);
        let state = guard.as_mut()?;
        let mut warm_time = None;
        if let Some(&layout) = state.derainer.layout() {
            let (width, height) = (layout.width, layout.height);
            // The caps may have changed since the loader checked the model. The scratch tensor
            // of its warm-up is kept when the size is the same.
            let checked = model.check_frame_size(width, height).and_then(|()| {
                derainer
                    .configure(layout)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            if let Err(why) = checked {
                drop(guard);
                self.refuse(
                    generation,
                    &settings,
                    &OpenError::new(Failure::Contract, why),
                );
                return None;
            }
            let padded = derainer.padded();
            warm_time = warm.filter(|(at, _)| *at == padded).map(|(_, t)| t);
        }
        let old_model = std::mem::replace(&mut state.model, model);
        let old_derainer = std::mem::replace(&mut state.derainer, derainer);
        let provider = state.derainer.network().provider().to_string();
        drop(guard);
        gst::info!(CAT, imp = self, "reloaded: {why}");
        lock(&self.settings).active = Some(settings.clone());
        let (policy, max_lateness) = self.lateness_settings();
        let moved = {
            let mut stats = lock(&self.stats);
            stats.active_provider = provider.clone();
            stats.gpu_frames = gpu_frames;
            // The old model's times say nothing about the new one.
            stats.timings.clear_window();
            warm_time.is_some_and(|t| {
                stats.estimate.warm_up(t, Instant::now())
                    && stats.refresh_latency(policy, max_lateness)
            })
        };
        self.post(
            gst::message::Element::builder(
                gst::Structure::builder("derain-model")
                    .field("model", settings.model.as_str())
                    .field("active-provider", provider.as_str())
                    .build(),
            )
            .src(&*self.obj())
            .build(),
        );
        let obj = self.obj();
        obj.notify("model");
        obj.notify("active-provider");
        if moved {
            self.announce_latency();
        }
        Some((old_model, old_derainer))
    }

    /// Stops the reload machinery: the request waiting is forgotten, a session in flight is
    /// closed by its thread, which is joined.
    pub(super) fn stop_reloads(&self) {
        let (thread, ready, closer) = {
            let mut r = lock(&self.reloads);
            r.running = false;
            r.generation += 1;
            r.request = None;
            r.frame = None;
            (r.thread.take(), r.ready.take(), r.closer.take())
        };
        drop(ready);
        for thread in [thread, closer].into_iter().flatten() {
            let _ = thread.join();
        }
    }

    /// Closes the session a swap replaced on a thread of its own, so that closing it (freeing
    /// its memory, joining its threads) delays no frame; the closer of the swap before, long
    /// done by now, is joined first, so at most one is ever left.
    pub(super) fn retire(&self, retired: (Model, Derainer)) {
        let earlier = lock(&self.reloads).closer.take();
        if let Some(t) = earlier {
            let _ = t.join();
        }
        // A thread that cannot start drops its closure, and with it the session, right here.
        match std::thread::Builder::new()
            .name("derain-close".into())
            .spawn(move || drop(retired))
        {
            Ok(handle) => lock(&self.reloads).closer = Some(handle),
            Err(e) => gst::debug!(CAT, imp = self, "closed the old session here: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boundary_wakes_the_waiting_loader_and_patience_bounds_the_wait() {
        let b = Arc::new(Boundaries::default());
        // Nobody passes: the wait ends by itself, after its patience.
        let started = Instant::now();
        b.wait_next(Duration::from_millis(20));
        assert!(started.elapsed() >= Duration::from_millis(20));
        // A waiter with a minute's patience returns as soon as a boundary is passed. Passed
        // until it returns, since the first pass may come before it waits.
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || b.wait_next(Duration::from_secs(60)))
        };
        let started = Instant::now();
        while !waiter.is_finished() {
            b.pass();
            std::thread::yield_now();
        }
        waiter.join().expect("waiter");
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
