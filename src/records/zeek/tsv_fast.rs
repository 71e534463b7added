//! The fast path of a TSV conn line: a plain data line read straight from its bytes into the
//! fields a window needs, with no `DateTime`, no per-field search and no per-line UTF-8 check
//! (the caller checks a whole batch at once). Anything out of the common form (a header or
//! blank line, a wrong field count, an unset or unusual value, a separator of several bytes)
//! is `None`, and [`LineParser::line`] then reads the line, and reports on it, as always, so
//! whatever this accepts it reads to the values that path gives.

use super::line::{Columns, LineParser, digits, epoch_parts};

/// The fields of one connection the window aggregation uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnFields<'a> {
    /// Whole seconds since 1970 (the `ts` floored: `ConnLine::ts.timestamp()`).
    pub ts_secs: i64,
    pub orig_h: &'a str,
    pub resp_h: &'a str,
    pub resp_p: u16,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
}

/// Columns past this are not cut out by the fast path (a header that puts a needed field
/// further along is read by the full path).
const MAX_COLS: usize = 64;

impl LineParser {
    /// The connection on a TSV data line in the common form, or `None` (see the module).
    pub(crate) fn fast_tsv<'a>(&self, line: &'a str) -> Option<ConnFields<'a>> {
        let (sep, cols, unset, empty) = self.fast_parts()?;
        let bytes = line.as_bytes();
        if bytes.first().is_none_or(|&b| b == b'#') {
            return None;
        }
        let mut at = [0u32; MAX_COLS];
        let seps = find_byte(bytes, sep, &mut at[..=cols.last]);
        if seps + 1 != cols.count {
            return None;
        }
        let field = |i: usize| set_field(line, &at, seps, i, unset, empty);
        let count = |col: Option<usize>| match col.map(field) {
            None | Some(None) => Some(0),
            Some(Some(v)) => digits(v.as_bytes(), 19),
        };
        Some(ConnFields {
            ts_secs: epoch_parts(field(cols.ts)?.as_bytes())?.0,
            orig_h: field(cols.orig_h)?,
            resp_h: field(cols.resp_h)?,
            resp_p: u16::try_from(digits(field(cols.resp_p)?.as_bytes(), 5)?).ok()?,
            orig_bytes: count(cols.orig_bytes)?,
            resp_bytes: count(cols.resp_bytes)?,
        })
    }
}

/// Field `i` of `line` (cut at the separators `at`, `seps` in all), unless it is unset or empty
/// (as the full path's `set` says).
#[inline(always)]
fn set_field<'a>(
    line: &'a str,
    at: &[u32],
    seps: usize,
    i: usize,
    unset: &str,
    empty: &str,
) -> Option<&'a str> {
    let start = if i == 0 { 0 } else { at[i - 1] as usize + 1 };
    let end = if i < seps { at[i] as usize } else { line.len() };
    let v = line.get(start..end)?;
    let is = |marker: &str| v.len() == marker.len() && v.as_bytes() == marker.as_bytes();
    (!v.is_empty() && !is(unset) && !is(empty)).then_some(v)
}

/// Where `byte` stands in `text`: the first `at.len()` positions into `at`; returns how many
/// times it stands there in all. Sixteen bytes at a time (SSE2, which every x86-64 CPU has):
/// a compare gives a bit mask of the matches, whose set bits are the positions.
#[cfg(target_arch = "x86_64")]
fn find_byte(text: &[u8], byte: u8, at: &mut [u32]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of x86-64 (every CPU of the target has it); `block` is 16 readable
    // bytes and the load has no alignment requirement.
    let mask_of = |block: &[u8; 16]| -> u32 {
        unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8))) as u32
        }
    };
    let blocks = text.chunks_exact(16);
    let tail = blocks.remainder();
    let mut last = [0u8; 16];
    last[..tail.len()].copy_from_slice(tail);
    let masks = blocks
        .map(|b| mask_of(b.try_into().expect("sixteen bytes")))
        .chain(std::iter::once(mask_of(&last) & ((1u32 << tail.len()) - 1)));
    let mut n = 0;
    let want = at.len();
    for (k, mut hits) in masks.enumerate() {
        while hits != 0 && n < want {
            at[n] = (k * 16) as u32 + hits.trailing_zeros();
            n += 1;
            hits &= hits - 1;
        }
        n += hits.count_ones() as usize;
    }
    n
}

/// [`find_byte`] elsewhere, eight bytes at a time: a byte of `w ^ pattern` is zero where `byte`
/// is, and the high bit of each zero byte is set exactly (no borrow crosses bytes).
#[cfg(not(target_arch = "x86_64"))]
fn find_byte(text: &[u8], byte: u8, at: &mut [u32]) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let pattern = u64::from_ne_bytes([byte; 8]);
    let want = at.len();
    let mut n = 0;
    let words = text.chunks_exact(8);
    let tail = words.remainder();
    let mut last = [!byte; 8];
    last[..tail.len()].copy_from_slice(tail);
    for (k, word) in words.chain(std::iter::once(&last[..])).enumerate() {
        let y = u64::from_le_bytes(word.try_into().expect("eight bytes")) ^ pattern;
        let mut hits = !(((y & LOW7).wrapping_add(LOW7)) | y | LOW7);
        while hits != 0 && n < want {
            at[n] = (k * 8) as u32 + hits.trailing_zeros() / 8;
            n += 1;
            hits &= hits - 1;
        }
        n += hits.count_ones() as usize;
    }
    n
}

impl LineParser {
    /// What the fast path needs from the header: the separator byte, the columns (none past
    /// [`MAX_COLS`]), the unset and empty markers.
    fn fast_parts(&self) -> Option<(u8, &Columns, &str, &str)> {
        let h = self.header();
        let [sep] = h.sep().as_bytes() else {
            return None;
        };
        let cols = h.columns()?;
        (cols.last < MAX_COLS && self.format() == super::ZeekFormat::Tsv).then_some((
            *sep,
            cols,
            h.unset(),
            h.empty(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::zeek::ZeekFormat;
    use proptest::prelude::*;

    const HEADER: &[&str] = &[
        "#separator \\x09",
        "#unset_field\t-",
        "#empty_field\t(empty)",
        "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state",
    ];

    fn parser() -> LineParser {
        let mut p = LineParser::new(ZeekFormat::Tsv);
        for (i, h) in HEADER.iter().enumerate() {
            assert!(p.line(i + 1, h.as_bytes()).unwrap().is_none());
        }
        p
    }

    /// What the full path reads, as the fast path's fields.
    fn full<'a>(p: &mut LineParser, line: &'a str) -> Option<ConnFields<'a>> {
        let c = p.line(9, line.as_bytes()).ok()??;
        let (std::borrow::Cow::Borrowed(orig_h), std::borrow::Cow::Borrowed(resp_h)) =
            (c.orig_h, c.resp_h)
        else {
            panic!("TSV hosts are borrowed");
        };
        Some(ConnFields {
            ts_secs: c.ts.timestamp(),
            orig_h,
            resp_h,
            resp_p: c.resp_p,
            orig_bytes: c.orig_bytes,
            resp_bytes: c.resp_bytes,
        })
    }

    #[test]
    fn a_plain_line_reads_as_the_full_path_reads_it() {
        let mut p = parser();
        assert!(p.fast_parts().is_some());
        let line = "1699999996.606582\tCx\t10.1.0.83\t37332\t208.177.171.73\t443\ttcp\tssl\t0.5\t4806\t115\tSF";
        let fast = p.fast_tsv(line).expect("the common form");
        assert_eq!(fast.ts_secs, 1_699_999_996);
        assert_eq!(
            (fast.orig_h, fast.resp_h, fast.resp_p),
            ("10.1.0.83", "208.177.171.73", 443)
        );
        assert_eq!((fast.orig_bytes, fast.resp_bytes), (4806, 115));
        assert_eq!(Some(fast), full(&mut p, line));
    }

    #[test]
    fn lines_out_of_the_common_form_are_left_to_the_full_path() {
        let p = parser();
        for line in [
            "",
            "#close\t2023",
            // Too few and too many fields.
            "1699999996.6\tCx\t10.1.0.83\t1\t8.8.8.8\t53\tudp\tdns\t0.1\t1\t2",
            "1699999996.6\tCx\t10.1.0.83\t1\t8.8.8.8\t53\tudp\tdns\t0.1\t1\t2\tSF\tx",
            // Unset needed fields, unusual numbers: the full path errs or reads them its way.
            "-\tCx\t10.1.0.83\t1\t8.8.8.8\t53\tudp\tdns\t0.1\t1\t2\tSF",
            "1.7e9\tCx\t10.1.0.83\t1\t8.8.8.8\t53\tudp\tdns\t0.1\t1\t2\tSF",
            "1699999996.1234567\tCx\t10.1.0.83\t1\t8.8.8.8\t53\tudp\tdns\t0.1\t1\t2\tSF",
            "1699999996.6\tCx\t(empty)\t1\t8.8.8.8\t53\tudp\tdns\t0.1\t1\t2\tSF",
            "1699999996.6\tCx\t10.1.0.83\t1\t8.8.8.8\t+53\tudp\tdns\t0.1\t1\t2\tSF",
            "1699999996.6\tCx\t10.1.0.83\t1\t8.8.8.8\t65536\tudp\tdns\t0.1\t1\t2\tSF",
            "1699999996.6\tCx\t10.1.0.83\t1\t8.8.8.8\t53\tudp\tdns\t0.1\t-1\t2\tSF",
        ] {
            assert_eq!(p.fast_tsv(line), None, "{line:?}");
        }
        assert!(
            LineParser::new(ZeekFormat::Tsv).fast_parts().is_none(),
            "no #fields yet"
        );
    }

    #[test]
    fn unset_counts_are_zero_as_in_the_full_path() {
        let mut p = parser();
        let line = "1699999996\tCx\t10.1.0.83\t1\t8.8.8.8\t53\tudp\t-\t-\t-\t(empty)\tS0";
        let fast = p.fast_tsv(line).expect("the common form");
        assert_eq!((fast.orig_bytes, fast.resp_bytes), (0, 0));
        assert_eq!(Some(fast), full(&mut p, line));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Lines of arbitrary text in each field: whatever the fast path reads, the full path
        /// reads the same.
        #[test]
        fn the_fast_path_agrees_with_the_full_path(
            fields in proptest::collection::vec(
                prop_oneof![
                    4 => "[0-9]{1,11}(\\.[0-9]{0,7})?",
                    2 => "[0-9]{1,6}",
                    2 => "[0-9a-f.:]{1,8}",
                    1 => Just("-".to_string()),
                    1 => Just("(empty)".to_string()),
                    1 => "[ -~]{0,6}",
                ],
                13,
            ),
            n in prop_oneof![8 => Just(12usize), 1 => 10usize..14],
        ) {
            let mut p = parser();
            let line = fields[..n].join("\t");
            if let Some(fast) = p.fast_tsv(&line) {
                prop_assert_eq!(Some(fast), full(&mut p, &line), "{:?}", line);
            }
        }
    }

    #[test]
    fn find_byte_finds_every_separator() {
        let text = b"a\tbb\t\tccc\tdddddddd\teeeeeeeee\tf\t";
        let want: Vec<u32> = text
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\t')
            .map(|(i, _)| i as u32)
            .collect();
        for keep in 0..=want.len() {
            let mut at = vec![0u32; keep];
            assert_eq!(find_byte(text, b'\t', &mut at), want.len());
            assert_eq!(at, want[..keep]);
        }
        // A byte just above the separator (0x0a after 0x09) is not taken for it.
        let mut at = [0u32; 4];
        assert_eq!(find_byte(b"\t\n\x08\x0a\t\x89\x09\x19", b'\t', &mut at), 3);
        assert_eq!(at[..3], [0, 4, 6]);
    }
}
