//! What the property tests of every crate share (included with `#[path]`): the number of cases,
//! a seeded configuration, mutations of real input files, and an allocator that measures how
//! much memory a call takes, so that "memory bounded by the input's real size" is checked, not
//! assumed.
//!
//! Each property-test file is its own test binary with one `#[test]`, so the allocator's count
//! is the work of that test alone. `NEXTDET_PROPTEST_CASES` sets the number of cases of every
//! property (the defaults take a few seconds per target), `NEXTDET_PROPTEST_SEED` the seed.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes live and the peak since the last reset.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call forwards to the system allocator unchanged; only counters are updated.
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
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most memory it held at once beyond what was live
/// when it started.
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// Asserts that `f` held at most `per_byte` bytes per input byte plus `fixed` bytes at once.
pub fn bounded<T>(what: &str, input_len: usize, per_byte: usize, fixed: usize, f: impl FnOnce() -> T) -> T {
    let (out, peak) = peak_during(f);
    let bound = input_len * per_byte + fixed;
    assert!(peak <= bound, "{what}: {peak} bytes held for a {input_len}-byte input (bound {bound})");
    out
}

/// The cases of each property: `NEXTDET_PROPTEST_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("NEXTDET_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A proptest configuration with [`cases`] cases and a fixed seed (`NEXTDET_PROPTEST_SEED`,
/// else 20261206), so that a CI run is reproducible; no failure files are written into the
/// source tree (proptest prints the minimal failing input).
pub fn config(default_cases: u32) -> Config {
    let seed = std::env::var("NEXTDET_PROPTEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261206);
    Config {
        cases: cases(default_cases),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flips one bit.
    Flip(usize, u8),
    /// Overwrites one byte.
    Set(usize, u8),
    /// Inserts bytes.
    Insert(usize, Vec<u8>),
    /// Removes up to `n` bytes.
    Remove(usize, usize),
    /// Copies `n` bytes from one place to another (repeating structure).
    Splice(usize, usize, usize),
    /// Cuts the input.
    Truncate(usize),
    /// Writes a boundary value (0, all ones, the sign bit, ...) as 1, 2, 4 or 8 bytes.
    Boundary(usize, u8, bool),
}

/// Any [`Mutation`].
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 1usize..64).prop_map(|(a, n)| Mutation::Remove(a, n)),
        (any::<usize>(), 1usize..256, any::<usize>()).prop_map(|(a, n, b)| Mutation::Splice(a, n, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0u8..16, any::<bool>()).prop_map(|(a, k, be)| Mutation::Boundary(a, k, be)),
    ]
}

/// `seed` with `mutations` applied in order.
pub fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for m in mutations {
        let len = v.len().max(1);
        match m {
            Mutation::Flip(at, bit) if !v.is_empty() => v[at % len] ^= 1 << bit,
            Mutation::Set(at, byte) if !v.is_empty() => v[at % len] = *byte,
            Mutation::Insert(at, bytes) => {
                let at = at % (v.len() + 1);
                v.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove(at, n) if !v.is_empty() => {
                let at = at % len;
                let end = (at + n).min(v.len());
                v.drain(at..end);
            }
            Mutation::Splice(from, n, to) if !v.is_empty() => {
                let from = from % len;
                let piece: Vec<u8> = v[from..(from + n).min(v.len())].to_vec();
                let to = to % (v.len() + 1);
                v.splice(to..to, piece);
            }
            Mutation::Truncate(at) => v.truncate(at % (v.len() + 1)),
            Mutation::Boundary(at, kind, big_endian) if !v.is_empty() => {
                let width = 1usize << (kind % 4);
                let value: u64 = match kind / 4 {
                    0 => 0,
                    1 => u64::MAX,
                    2 => 1u64 << (width * 8 - 1),
                    _ => (1u64 << (width * 8 - 1)) - 1,
                };
                let bytes = if *big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
                let bytes = if *big_endian { &bytes[8 - width..] } else { &bytes[..width] };
                let at = at % len;
                for (i, b) in bytes.iter().enumerate() {
                    if at + i < v.len() {
                        v[at + i] = *b;
                    }
                }
            }
            _ => {}
        }
    }
    v
}

/// Copies of `seed` with one to eight mutations.
pub fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(mutation(), 1..8).prop_map(move |m| apply(&seed, &m))
}

/// A JSON value of bounded size, for structure-aware edits of JSON files.
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()].prop_map(Value::from),
        prop_oneof![Just(-1.5f64), Just(0.5), Just(1e300), Just(-0.0), any::<f64>()]
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z_]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// One structure-aware edit of a JSON document: at a node chosen by `path` (indices taken modulo
/// the children), replace it, remove a member, or duplicate an array element.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Replace the node.
    Replace(Vec<usize>, serde_json::Value),
    /// Remove the `k`-th member or element of the node.
    Remove(Vec<usize>, usize),
    /// Duplicate the `k`-th element of an array node.
    Duplicate(Vec<usize>, usize),
}

/// Any [`JsonEdit`].
pub fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let path = prop::collection::vec(any::<usize>(), 0..6);
    prop_oneof![
        (path.clone(), json_value()).prop_map(|(p, v)| JsonEdit::Replace(p, v)),
        (path.clone(), any::<usize>()).prop_map(|(p, k)| JsonEdit::Remove(p, k)),
        (path, any::<usize>()).prop_map(|(p, k)| JsonEdit::Duplicate(p, k)),
    ]
}

fn node_at<'a>(mut v: &'a mut serde_json::Value, path: &[usize]) -> &'a mut serde_json::Value {
    for &i in path {
        let len = match &*v {
            serde_json::Value::Array(a) => a.len(),
            serde_json::Value::Object(o) => o.len(),
            _ => 0,
        };
        if len == 0 {
            break;
        }
        v = match v {
            serde_json::Value::Array(a) => &mut a[i % len],
            serde_json::Value::Object(o) => o.values_mut().nth(i % len).expect("in range"),
            _ => unreachable!(),
        };
    }
    v
}

/// `doc` with `edits` applied.
pub fn apply_json(doc: &serde_json::Value, edits: &[JsonEdit]) -> serde_json::Value {
    let mut doc = doc.clone();
    for e in edits {
        match e {
            JsonEdit::Replace(p, v) => *node_at(&mut doc, p) = v.clone(),
            JsonEdit::Remove(p, k) => match node_at(&mut doc, p) {
                serde_json::Value::Array(a) if !a.is_empty() => {
                    let k = k % a.len();
                    a.remove(k);
                }
                serde_json::Value::Object(o) if !o.is_empty() => {
                    let key = o.keys().nth(k % o.len()).expect("in range").clone();
                    o.remove(&key);
                }
                _ => {}
            },
            JsonEdit::Duplicate(p, k) => {
                if let serde_json::Value::Array(a) = node_at(&mut doc, p) {
                    if !a.is_empty() {
                        let item = a[k % a.len()].clone();
                        a.push(item);
                    }
                }
            }
        }
    }
    doc
}
