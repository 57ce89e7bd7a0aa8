//! Stop strings in streamed text (after [`plumb_tokenizer::Utf8Decoder`] made it whole
//! characters): found across token boundaries and cut, with any tail that could begin a stop
//! string held back until it is known not to.

/// Finds stop strings in streamed text.
#[derive(Debug)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted.
    pending: String,
}

impl StopMatcher {
    pub(crate) fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds `piece`; returns the text now safe to emit and whether a stop string was hit
    /// (then the text stops right before it).
    pub(crate) fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        if self.stops.is_empty() {
            return (std::mem::take(&mut self.pending), false);
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let mut emit = std::mem::take(&mut self.pending);
            emit.truncate(at);
            return (emit, true);
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let mut keep = 0;
        for (i, _) in self.pending.char_indices() {
            let suffix = &self.pending[i..];
            if suffix.len() > keep && self.stops.iter().any(|s| s.starts_with(suffix)) {
                keep = suffix.len();
                break; // suffixes only get shorter from here
            }
        }
        let cut = self.pending.len() - keep;
        let emit: String = self.pending.drain(..cut).collect();
        (emit, false)
    }

    /// Releases whatever was held back (generation ended without a stop string).
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_across_pieces_are_cut_and_never_emitted() {
        let mut m = StopMatcher::new(&["\n\nUser:".to_string()]);
        let mut out = String::new();
        let mut hit = false;
        for p in ["Hi", " there", "\n", "\nUs", "er:", " more"] {
            let (e, h) = m.push(p);
            out.push_str(&e);
            if h {
                hit = true;
                break;
            }
        }
        assert!(hit);
        assert_eq!(out, "Hi there");
    }

    #[test]
    fn held_back_prefix_is_released_when_it_does_not_match() {
        let mut m = StopMatcher::new(&["END".to_string(), String::new()]);
        assert_eq!(m.push("abcE").0, "abc");
        assert_eq!(m.push("N").0, "");
        assert_eq!(m.push("x").0, "ENx");
        assert_eq!(m.push("E").0, "");
        assert_eq!(m.finish(), "E");
    }
}
