//! The Zeek reader's estimates of its state, which the memory budget charges as the state grows
//! (`records::read`), against what the allocator really holds for it, for logs of a few shapes.
//! A counting global allocator sees every allocation of the process, hence a binary of its own,
//! with one test so nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use netsentinel::records::read::zeek_finish_bytes;
use netsentinel::records::zeek::read_windows;
use netsentinel::records::{
    BatchBuilder, Features, GroupBy, Window, ZeekFormat, ZeekOptions, zeek::ZeekReader,
};

/// Counts the bytes allocated and not freed (as glibc's malloc takes them: an 8-byte header,
/// 16-byte steps, 32 at least) and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn block(size: usize) -> usize {
    (size + 8).next_multiple_of(16).max(32)
}

fn grew(size: usize) {
    let now = LIVE.fetch_add(block(size), Relaxed) + block(size);
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(block(layout.size()), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a move: both blocks are held for a moment.
            grew(new_size);
            LIVE.fetch_sub(block(layout.size()), Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const HEADER: &str = "#separator \\x09\n#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.resp_h\tid.resp_p\torig_bytes\tresp_bytes\n";

fn host(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// A TSV conn log of `n` lines; `line(i)` gives (seconds since the first, orig_h, resp_h, port).
fn log(n: usize, line: impl Fn(usize) -> (usize, String, String, usize)) -> Vec<u8> {
    let mut s = String::from(HEADER);
    for i in 0..n {
        let (t, orig, resp, port) = line(i);
        s.push_str(&format!(
            "{}.{:06}\tC{i}\t{orig}\t{resp}\t{port}\t{}\t{}\n",
            1_700_000_000 + t,
            i % 1_000_000,
            100 + i % 7,
            200 + i % 11
        ));
    }
    s.into_bytes()
}

struct Measured {
    /// The reader's state estimate and the bytes really held, after the last chunk.
    state: (u64, u64),
    /// The charge before the windows are merged and the peak held from then until the batch
    /// is built, above what was held before.
    finish: (u64, u64),
    windows: usize,
}

fn measure(body: &[u8], opts: &ZeekOptions) -> Measured {
    let before = LIVE.load(Relaxed);
    let mut reader = ZeekReader::new(ZeekFormat::Tsv, opts);
    for chunk in body.chunks(64 << 10) {
        reader.push(chunk).unwrap();
    }
    // The workers' last batches are in flight: let them end, so the state is all noted.
    reader.settle().unwrap();
    let state = (reader.state_bytes(), (LIVE.load(Relaxed) - before) as u64);
    let charge = zeek_finish_bytes(&reader);
    let held = LIVE.load(Relaxed);
    PEAK.store(held, Relaxed);
    let (records, _) = reader.finish().unwrap();
    let mut b = BatchBuilder::with_features(Features::Default, false, 10_000_000);
    read_windows(&records, opts.group_by, &mut b).unwrap();
    let batch = b.finish().unwrap();
    let peak = PEAK.load(Relaxed).saturating_sub(before) as u64;
    let windows = batch.len();
    drop((records, batch));
    Measured {
        state,
        finish: (charge, peak),
        windows,
    }
}

fn opts(window: u64, group_by: GroupBy) -> ZeekOptions {
    ZeekOptions {
        window: Window::from_secs(window).unwrap(),
        group_by,
        ..ZeekOptions::default()
    }
}

/// For each shape, the estimate of the state after the last chunk and the charge before the
/// windows are merged are within a factor of what the allocator holds: never far below it (the
/// budget would not bound the request), never far above it (ordinary logs would be refused).
#[test]
fn the_state_estimates_follow_what_is_really_held() {
    let n = 300_000;
    let shapes = [
        (
            "every line a new host's 1s window",
            log(n, |i| (i, host(i), "8.8.8.8".into(), 53)),
            opts(1, GroupBy::OrigHost),
        ),
        (
            "500 hosts, 5m windows",
            log(n, |i| {
                (i / 10, host(i % 500), host(i % 37 + 7000), 80 + i % 3)
            }),
            opts(300, GroupBy::OrigHost),
        ),
        (
            "one network, distinct sessions",
            log(n, |i| (i / 100, host(i % 50), host(i), 443)),
            opts(3600, GroupBy::None),
        ),
    ];
    for (name, body, opts) in &shapes {
        let m = measure(body, opts);
        let (est, real) = m.state;
        let (charge, peak) = m.finish;
        eprintln!(
            "{name}: body {} B, {} windows; state est {est} real {real} ({:.2}); finish charge {charge} peak {peak} ({:.2})",
            body.len(),
            m.windows,
            est as f64 / real as f64,
            charge as f64 / peak as f64
        );
        assert!(m.windows > 0, "{name}");
        // Measured 1.00 for the state and 0.91-1.27 for the charge: a term left out (hosts,
        // sessions, the merge, the records) or counted twice moves a shape out of these bounds.
        let within = |est: u64, real: u64| (0.8..1.6).contains(&(est as f64 / real as f64));
        assert!(within(est, real), "{name}: state {est} for {real} held");
        assert!(
            within(charge, peak),
            "{name}: charge {charge} for a peak of {peak}"
        );
    }
}
