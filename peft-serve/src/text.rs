//! A completion's text as its tokens arrive: what can be shown to a client now, and where a
//! stop string ends it.
//!
//! The caller decodes the whole completion so far after each token and hands the text here.
//! Two things are held back until the next token settles them: a trailing U+FFFD (a
//! multi-byte character whose remaining bytes are in the next token), and a tail that could be
//! the start of a stop string (so a client never sees part of a stop string). Streaming and
//! non-streaming responses both go through this, so they give the same text.

/// The shown part of one completion's text.
#[derive(Debug)]
pub struct TextStream {
    stops: Vec<String>,
    /// Bytes of the text already handed out.
    shown: usize,
    stopped: bool,
}

impl TextStream {
    /// `stops` must not contain empty strings.
    pub fn new(stops: Vec<String>) -> Self {
        debug_assert!(stops.iter().all(|s| !s.is_empty()));
        Self {
            stops,
            shown: 0,
            stopped: false,
        }
    }

    /// Takes the completion's whole text so far; returns what may be shown now, beyond what
    /// was shown before. After a stop string appears this returns the text before it, and
    /// [`TextStream::hit_stop`] is true.
    pub fn advance(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        let earliest_stop = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min();
        let end = match earliest_stop {
            Some(cut) => {
                self.stopped = true;
                cut
            }
            None => self.settled_len(text),
        };
        self.take_until(text, end)
    }

    /// The end of generation: everything not shown yet (nothing, after a stop string).
    pub fn flush(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.take_until(text, text.len())
    }

    pub fn hit_stop(&self) -> bool {
        self.stopped
    }

    /// Length of the prefix of `text` that the next tokens cannot change or turn into a stop.
    fn settled_len(&self, text: &str) -> usize {
        let without_partial_char = text.trim_end_matches('\u{FFFD}');
        let stop_start = self
            .stops
            .iter()
            .flat_map(|stop| {
                // The longest proper prefix of `stop` that `text` ends with.
                stop.char_indices()
                    .skip(1)
                    .map(|(at, _)| &stop[..at])
                    .filter(|head| without_partial_char.ends_with(head))
                    .map(|head| head.len())
                    .max()
            })
            .max()
            .unwrap_or(0);
        without_partial_char.len() - stop_start
    }

    fn take_until(&mut self, text: &str, end: usize) -> String {
        // Decoding is prefix-stable for byte-level BPE, so `text` starts with what was shown.
        let delta = text.get(self.shown..end).unwrap_or_default().to_string();
        self.shown = self.shown.max(end);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds successive whole texts; returns the deltas, with the final flush last.
    fn feed(stops: &[&str], texts: &[&str]) -> (Vec<String>, bool) {
        let mut stream = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut deltas: Vec<String> = texts.iter().map(|t| stream.advance(t)).collect();
        deltas.push(stream.flush(texts.last().unwrap()));
        (deltas, stream.hit_stop())
    }

    #[test]
    fn without_stops_every_token_shows_at_once() {
        let (deltas, stopped) = feed(&[], &["Hello", "Hello world", "Hello world!"]);
        assert_eq!(deltas, ["Hello", " world", "!", ""]);
        assert!(!stopped);
    }

    #[test]
    fn a_possible_stop_is_held_back_then_released() {
        // "\n\n" is the stop: a single "\n" waits until the next token shows it is not one.
        let (deltas, stopped) = feed(&["\n\n"], &["a", "a\n", "a\nb", "a\nb\n"]);
        assert_eq!(deltas, ["a", "", "\nb", "", "\n"]);
        assert!(!stopped);
    }

    #[test]
    fn a_stop_split_across_tokens_cuts_the_text_before_it() {
        let (deltas, stopped) = feed(&["END", "."], &["x E", "x EN", "x END more"]);
        assert_eq!(deltas, ["x ", "", "", ""]);
        assert!(stopped);
        assert_eq!(deltas.concat(), "x ");
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let (deltas, stopped) = feed(&["b", "a"], &["xyab"]);
        assert_eq!(deltas.concat(), "xy");
        assert!(stopped);
    }

    #[test]
    fn half_a_character_waits_for_its_other_bytes() {
        let (deltas, _) = feed(&[], &["caf", "caf\u{FFFD}", "café"]);
        assert_eq!(deltas, ["caf", "", "é", ""]);
    }

    #[test]
    fn multibyte_stop_prefixes_are_cut_on_character_boundaries() {
        let (deltas, stopped) = feed(&["éé"], &["aé", "aéb", "aébéé"]);
        assert_eq!(deltas, ["a", "éb", "", ""]);
        assert!(stopped);
    }

    #[test]
    fn the_end_releases_what_was_held_back() {
        let (deltas, _) = feed(&["\n\n"], &["done\n"]);
        assert_eq!(deltas, ["done", "\n"]);
    }
}
