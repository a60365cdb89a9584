//! Bounds on what one config may cost to read: the size of each file, the nesting depth of its
//! YAML, and the number of files its `_base_` tree loads.
//!
//! libyaml (through serde_yaml) re-checks every open flow collection (`[`, `{`) for each token it
//! scans (unsafe-libyaml `scanner.rs`, `yaml_parser_stale_simple_keys` and the loop of
//! `yaml_parser_fetch_more_tokens`), so a document of `n` tokens nested `d` flow levels deep
//! costs `n * d`: 100,000 nested brackets take minutes before serde_yaml's own recursion limit
//! (128) rejects them, because serde_yaml parses the whole document before it builds anything.
//! [`nesting_beyond`] pulls libyaml's events one at a time instead and stops at the first
//! collection deeper than the limit, which the scanner reaches after at most the limit plus
//! one line (simple keys look ahead at most 1024 characters on one line) of tokens.

/// Largest config file read, in bytes (1 MiB; the largest shipped config is under 10 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Deepest nesting of mappings and lists in one config file (the deepest shipped config nests
/// 8 levels; serde_yaml itself gives up at 128).
pub const MAX_CONFIG_DEPTH: usize = 64;

/// Most files one config may load through `_base_`, counting a file included twice twice
/// (a diamond of bases repeated at every level would otherwise load exponentially many).
pub const MAX_CONFIG_FILES: usize = 256;

/// The line and column (from 1) of the first mapping or list nested deeper than `limit` in the
/// YAML `text`, or `None` when there is none or when libyaml finds a syntax error first (the
/// real parse then reports that error, at the same cost).
pub(crate) fn nesting_beyond(text: &str, limit: usize) -> Option<(u64, u64)> {
    let mut parser = Box::new(std::mem::MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
    let p = parser.as_mut_ptr();
    // SAFETY: the calls follow libyaml's protocol (initialize, set the input, parse events until
    // an error or the end, delete each event and then the parser). The parser lives in a box that
    // is not moved while in use, and it reads `text`, which outlives it; `text` is UTF-8, the
    // encoding set.
    unsafe {
        if !unsafe_libyaml::yaml_parser_initialize(p).ok {
            return None;
        }
        unsafe_libyaml::yaml_parser_set_encoding(p, unsafe_libyaml::YAML_UTF8_ENCODING);
        unsafe_libyaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as _);
        let mut depth = 0usize;
        let mut found = None;
        loop {
            let mut event = std::mem::MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
            if !unsafe_libyaml::yaml_parser_parse(p, event.as_mut_ptr()).ok {
                break;
            }
            let event = event.as_mut_ptr();
            let kind = (*event).type_;
            let mark = (*event).start_mark;
            unsafe_libyaml::yaml_event_delete(event);
            match kind {
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT | unsafe_libyaml::YAML_MAPPING_START_EVENT => {
                    depth += 1;
                    if depth > limit {
                        found = Some((mark.line + 1, mark.column + 1));
                        break;
                    }
                }
                unsafe_libyaml::YAML_SEQUENCE_END_EVENT | unsafe_libyaml::YAML_MAPPING_END_EVENT => {
                    depth = depth.saturating_sub(1)
                }
                unsafe_libyaml::YAML_STREAM_END_EVENT => break,
                _ => {}
            }
        }
        unsafe_libyaml::yaml_parser_delete(p);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_are_the_documented_numbers() {
        assert_eq!((MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_FILES), (1 << 20, 64, 256));
    }

    #[test]
    fn shallow_documents_pass() {
        assert_eq!(nesting_beyond("a: {b: [1, {c: 2}]}\nd:\n  - e: 1\n", 4), None);
        assert_eq!(nesting_beyond("", 1), None);
        assert_eq!(nesting_beyond("a: [", 8), None, "a syntax error is the real parser's to report");
    }

    #[test]
    fn the_first_collection_past_the_limit_is_located() {
        assert_eq!(nesting_beyond("a: [[[1]]]\n", 3), Some((1, 6)));
        assert_eq!(nesting_beyond("a:\n  b:\n    - c\n", 2), Some((3, 5)));
        assert_eq!(nesting_beyond("- - - - x\n", 3), Some((1, 7)));
    }
}
