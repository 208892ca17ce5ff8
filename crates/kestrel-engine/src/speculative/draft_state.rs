//! Per-sequence self-disabling of drafting. A verification step costs more than a decode
//! step (k + 1 query rows and logit rows instead of one), so drafts that are mostly rejected
//! make a sequence slower. Each sequence keeps an exponential moving average of its
//! acceptance rate (accepted / proposed per verification); when it falls below
//! [`MIN_ACCEPTANCE`] the sequence stops proposing for a pause of decode steps that doubles
//! each time drafting fails again (up to [`MAX_PAUSE`]) and is reset by a good verification.
//! Free text, whose n-grams rarely repeat, thus spends few steps verifying doomed drafts.

/// Weight of the newest verification in the moving average.
const EMA_WEIGHT: f32 = 0.3;
/// Below this average acceptance rate drafting pauses.
pub const MIN_ACCEPTANCE: f32 = 0.35;
/// The average a sequence starts (and resumes) with: one bad verification pauses it.
const INITIAL_ACCEPTANCE: f32 = 0.45;
/// First pause, in decode steps, and the longest one.
const MIN_PAUSE: u32 = 8;
pub const MAX_PAUSE: u32 = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct DraftState {
    /// Moving average of the acceptance rate.
    acceptance: f32,
    /// Decode steps left without drafting.
    pause_left: u32,
    /// The next pause's length.
    next_pause: u32,
}

impl Default for DraftState {
    fn default() -> Self {
        Self {
            acceptance: INITIAL_ACCEPTANCE,
            pause_left: 0,
            next_pause: MIN_PAUSE,
        }
    }
}

impl DraftState {
    /// Called once per decode step of the sequence: whether it may propose drafts now (a
    /// paused sequence counts the step off its pause).
    pub fn may_draft(&mut self) -> bool {
        if self.pause_left > 0 {
            self.pause_left -= 1;
            return false;
        }
        true
    }

    /// Records a verification of `num_draft` drafts of which `num_accepted` were kept.
    pub fn observe(&mut self, num_draft: usize, num_accepted: usize) {
        if num_draft == 0 {
            return;
        }
        let rate = num_accepted as f32 / num_draft as f32;
        self.acceptance = (1.0 - EMA_WEIGHT) * self.acceptance + EMA_WEIGHT * rate;
        if self.acceptance < MIN_ACCEPTANCE {
            self.pause_left = self.next_pause;
            self.next_pause = (self.next_pause * 2).min(MAX_PAUSE);
            self.acceptance = INITIAL_ACCEPTANCE;
        } else if rate >= 0.5 {
            self.next_pause = MIN_PAUSE;
        }
    }

    pub fn acceptance(&self) -> f32 {
        self.acceptance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_pause_drafting_with_growing_pauses() {
        let mut s = DraftState::default();
        assert!(s.may_draft());
        s.observe(4, 0);
        let paused = (0..MIN_PAUSE).filter(|_| !s.may_draft()).count();
        assert_eq!(paused, MIN_PAUSE as usize);
        assert!(s.may_draft());
        s.observe(4, 0);
        assert_eq!(
            (0..100).filter(|_| !s.may_draft()).count(),
            2 * MIN_PAUSE as usize
        );
        // Pauses are bounded.
        for _ in 0..20 {
            s.observe(4, 0);
            while !s.may_draft() {}
        }
        s.observe(4, 0);
        assert_eq!(
            (0..1000).filter(|_| !s.may_draft()).count(),
            MAX_PAUSE as usize
        );
    }

    #[test]
    fn good_acceptance_keeps_drafting_and_resets_the_pause() {
        let mut s = DraftState::default();
        for _ in 0..50 {
            assert!(s.may_draft());
            s.observe(4, 3);
        }
        assert!(s.acceptance() > 0.7);
        // Mixed results around the threshold: a full acceptance resets the backoff.
        s.observe(4, 0);
        s.observe(4, 0);
        s.observe(4, 0);
        while !s.may_draft() {}
        s.observe(4, 4);
        s.observe(4, 0);
        s.observe(4, 0);
        assert_eq!(
            (0..100).filter(|_| !s.may_draft()).count(),
            MIN_PAUSE as usize
        );
    }
}
