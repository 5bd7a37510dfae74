//! When to render and at what resolution. A full-window render is far too slow to make every frame
//! on a CPU device, so the view is rendered coarse while the camera moves (sized so that it arrives
//! in about `INTERACTIVE_SECONDS`), refined by halving the divisor while it rests, and re-rendered
//! as training changes the field only so often that renders take `share` of the time (but at least
//! every `MAX_REFRESH_SECONDS`).

/// A moving camera's render should take about this long.
pub const INTERACTIVE_SECONDS: f64 = 0.15;
/// A resting view is re-rendered at least this often while training, whatever its share says.
pub const MAX_REFRESH_SECONDS: f64 = 20.0;
/// The coarsest divisor (resolution = full / divisor).
pub const MAX_DIVISOR: u32 = 32;

/// What the displayed image shows, besides the step it was rendered at: a new key means the
/// current image is of the wrong view.
pub type ViewKey = u64;

#[derive(Clone, Debug)]
pub struct Refresh {
    /// Render throughput (pixels per second), a running estimate; none measured yet.
    pixels_per_s: Option<f64>,
    /// Divisor of the newest image of the current key (None: no image of it yet).
    shown: Option<(ViewKey, u32)>,
    /// The request in flight: its key, divisor and when it was sent (seconds on the app's clock).
    pending: Option<(ViewKey, u32, f64)>,
    /// When the newest image arrived, how long it took and the step it showed.
    last: Option<(f64, f64, u32)>,
    /// The fraction of time re-renders of a resting view may take while training.
    pub share: f64,
}

impl Default for Refresh {
    fn default() -> Self {
        Self { pixels_per_s: None, shown: None, pending: None, last: None, share: 0.1 }
    }
}

impl Refresh {
    /// The divisor to render at now, if a render is due. `pixels` is the full-resolution count,
    /// `moving` whether the camera moved within the last moments, `step` the trainer's step.
    pub fn due(&self, now: f64, key: ViewKey, pixels: u64, moving: bool, step: u32) -> Option<u32> {
        if self.pending.is_some() {
            return None;
        }
        let interactive = self.interactive_divisor(pixels);
        match self.shown {
            Some((shown_key, divisor)) if shown_key == key => {
                if divisor > 1 && !moving {
                    return Some(divisor / 2);
                }
                let (arrived, took, shown_step) = self.last?;
                let wait = (took / self.share.max(1e-3)).clamp(1.0, MAX_REFRESH_SECONDS);
                (step != shown_step && now - arrived >= wait && !moving).then_some(divisor)
            }
            // a new view: coarse first, unless the full one is as quick
            _ => Some(interactive),
        }
    }

    /// The smallest power-of-two divisor whose render takes about `INTERACTIVE_SECONDS`.
    pub fn interactive_divisor(&self, pixels: u64) -> u32 {
        let Some(rate) = self.pixels_per_s else { return 8 };
        let mut divisor = 1;
        while divisor < MAX_DIVISOR && pixels as f64 / f64::from(divisor * divisor) > rate * INTERACTIVE_SECONDS {
            divisor *= 2;
        }
        divisor
    }

    pub fn sent(&mut self, now: f64, key: ViewKey, divisor: u32) {
        self.pending = Some((key, divisor, now));
    }

    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// A render of `pixels` pixels arrived at `now`, showing `step`.
    pub fn arrived(&mut self, now: f64, pixels: u64, step: u32) {
        let Some((key, divisor, sent)) = self.pending.take() else { return };
        let took = (now - sent).max(1e-3);
        let rate = pixels as f64 / took;
        self.pixels_per_s = Some(self.pixels_per_s.map_or(rate, |r| 0.5 * r + 0.5 * rate));
        self.shown = Some((key, divisor));
        self.last = Some((now, took, step));
    }

    /// Forget the shown image (e.g. the cut changed): the next `due` starts coarse.
    pub fn invalidate(&mut self) {
        self.shown = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_view_starts_coarse_and_refines_while_the_camera_rests() {
        let mut r = Refresh::default();
        let pixels = 1280 * 800;
        let first = r.due(0.0, 1, pixels, false, 0).expect("a first render");
        assert_eq!(first, 8, "no throughput measured yet");
        r.sent(0.0, 1, first);
        assert_eq!(r.due(0.05, 1, pixels, false, 0), None, "one request at a time");
        // 16k pixels in 0.1 s: 160k pixels/s, so an interactive render is about 24k pixels
        r.arrived(0.1, pixels / 64, 0);
        assert_eq!(r.interactive_divisor(pixels), 8);
        assert_eq!(r.due(0.1, 1, pixels, true, 0), None, "no refinement while moving");
        assert_eq!(r.due(0.1, 1, pixels, false, 0), Some(4));
        // a moved camera is a new key: coarse again
        assert_eq!(r.due(0.1, 2, pixels, true, 0), Some(8));
    }

    #[test]
    fn a_resting_full_view_is_re_rendered_only_as_often_as_its_share_allows() {
        let mut r = Refresh { share: 0.1, ..Default::default() };
        r.sent(0.0, 1, 1);
        r.arrived(2.0, 1000, 10);
        assert_eq!(r.due(10.0, 1, 1000, false, 50), None, "2 s renders at a 10 % share: every 20 s");
        assert_eq!(r.due(22.0, 1, 1000, false, 10), None, "nothing new to show at the same step");
        assert_eq!(r.due(22.0, 1, 1000, false, 50), Some(1));
        assert_eq!(r.due(22.0, 1, 1000, true, 50), None);
        // a slow render still refreshes every MAX_REFRESH_SECONDS
        r.sent(22.0, 1, 1);
        r.arrived(32.0, 1000, 50);
        assert_eq!(r.due(51.0, 1, 1000, false, 60), None);
        assert_eq!(r.due(52.0, 1, 1000, false, 60), Some(1));
    }
}
