//! The spec string: one name for a configuration, the same in C, Rust and `SQLALLOC`.
//!
//! ```text
//! spec    := backend [ '+' layer ]*
//! backend := NAME [ ':' options ]          NAME: system | debug | memsys3 | memsys5
//!                                                 | tlsf | jemalloc | mimalloc | rust
//! layer   := NAME [ ':' options ]          NAME: limit | fault | scopes
//! options := key '=' value [ ',' key '=' value ]*
//! size    := digits [ K | M | G ]          binary units (K = 1024), case-insensitive
//! ```
//!
//! | part | keys |
//! |---|---|
//! | `system` | none |
//! | `debug` | `backtrace=N` frames kept per block (0–64, default 0) |
//! | `memsys3` | `heap=SIZE` (default 16M), `bias=on\|off` (default `on`: the lock is biased to the first thread that takes it, revoked with `membarrier` or, when a seccomp filter forbids it, an `mprotect` TLB shootdown; `off`: never, and no `membarrier` or `mprotect` system call, for sandboxes that forbid both or programs that want neither; see `src/lock.rs`) |
//! | `memsys5` | `heap=SIZE` (default 64M), `min=SIZE` smallest block, rounded up to a power of two (default 0: 8 bytes, as `SQLITE_CONFIG_HEAP` with a minimum of 0), `shards=N` independent buddy heaps cut from the one heap, 1–64 (default 1: SQLite's memsys5; see [`crate::backend::Memsys5`]), `bias=on\|off` (as for `memsys3`) |
//! | `tlsf` | `heap=SIZE` (default 64M), `shards=N` independent TLSF heaps cut from the one heap, 1–64 (default 1), `bias=on\|off` (as for `memsys3`), `cache=N` freed blocks under 1 KiB kept per size class for the next request of their size, 0–64 (default 16; 0: every free joined at once); Two-Level Segregated Fit, requests rounded up by less than 1/256 (see [`crate::backend::Tlsf`]) |
//! | `jemalloc` | none (cargo feature `jemalloc`) |
//! | `mimalloc` | none (cargo feature `mimalloc`) |
//! | `rust` | none: the program's `#[global_allocator]` |
//! | `limit` | `max=SIZE` (required): hard cap on the bytes in use, as `xSize` counts them |
//! | `scopes` | none: per-scope counters and caps for names the program creates ([`crate::scopes`]) |
//! | `fault` | none (counts calls, fails none until armed from C or Rust), or one of `nth=N[,repeat=K]`, `every=N`, `rate=P[,seed=S]`; and `benign=count\|skip` (default `count`). N ≥ 1, K ≥ 0, S ≥ 0 whole numbers without units, P a fraction 0–1 or a percentage `0%`–`100%`. Semantics: [`crate::fault`] |
//!
//! Layers may come in any order after the backend; they always apply as counters, limit, fault,
//! scopes, backend (see [`crate::stack`]).
//!
//! Surrounding whitespace is ignored; whitespace inside is an error. A key given twice, an
//! unknown key or name, a size with a bad unit, a zero size, a size that overflows 64 bits and a
//! layer given twice are errors. The whole spec is refused and the message names the part.

use crate::fault::{Benign, FaultPlan, FaultSpec};
use std::fmt;

/// A parsed spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The allocator at the bottom.
    pub backend: Backend,
    /// Cap on live bytes (`+limit:max=`).
    pub limit: Option<u64>,
    /// Fault injection (`+fault:...`).
    pub fault: Option<FaultSpec>,
    /// Per-scope counters and caps (`+scopes`).
    pub scopes: bool,
}

/// A backend with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `system`: libc malloc (SQLite's mem1).
    System,
    /// `debug`: guards, fills, a live-block list (SQLite's mem2).
    Debug {
        /// Frames of backtrace kept per block.
        backtrace: usize,
    },
    /// `memsys3`: first fit over one heap (SQLite's mem3).
    Memsys3 {
        /// Heap size in bytes.
        heap: usize,
        /// Whether the lock may be biased to one thread (`bias=`, default on).
        bias: bool,
    },
    /// `memsys5`: power-of-two buddy over one heap (SQLite's mem5).
    Memsys5 {
        /// Heap size in bytes.
        heap: usize,
        /// Requested minimum allocation in bytes (0: SQLite's default).
        min: usize,
        /// Independent buddy heaps the heap is cut into (1: SQLite's memsys5).
        shards: usize,
        /// Whether the parts' locks may be biased to one thread (`bias=`, default on).
        bias: bool,
    },
    /// `tlsf`: Two-Level Segregated Fit over one heap.
    Tlsf {
        /// Heap size in bytes.
        heap: usize,
        /// Independent TLSF heaps the heap is cut into.
        shards: usize,
        /// Whether the parts' locks may be biased to one thread (`bias=`, default on).
        bias: bool,
        /// Freed blocks under 1 KiB kept unjoined per size class for the next request of the
        /// same size (`cache=`, 0–64, default 16; 0: every free joined at once).
        cache: usize,
    },
    /// `jemalloc`: jemalloc's sized API (cargo feature `jemalloc`).
    Jemalloc,
    /// `mimalloc`: mimalloc (cargo feature `mimalloc`).
    Mimalloc,
    /// `rust`: the program's `#[global_allocator]`.
    Rust,
}

/// Every backend name, in the order error messages list them.
pub const BACKEND_NAMES: &[&str] = &[
    "system", "debug", "memsys3", "memsys5", "tlsf", "jemalloc", "mimalloc", "rust",
];

/// Refuse a backend whose cargo feature is off, naming the feature.
fn built_in(part: &str, name: &str, on: bool) -> Result<(), SpecError> {
    if on {
        Ok(())
    } else {
        Err(err(
            part,
            format!("backend '{name}' is not built in (enable the cargo feature {name})"),
        ))
    }
}

/// Most frames of backtrace the debug backend keeps per block.
pub const MAX_BACKTRACE: usize = 64;

/// Most blocks a `tlsf` quick cache may hold per size class (`cache=`).
pub const MAX_CACHE: usize = crate::backend::tlsf::MAX_CACHE;

/// The value of a `bias=` key (absent: on).
fn bias(part: &str, v: Option<&str>) -> Result<bool, SpecError> {
    match v {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(v) => Err(err(part, format!("bias must be 'on' or 'off', not '{v}'"))),
    }
}

/// Most `shards` a `memsys5` or `tlsf` heap may be cut into.
pub const MAX_SHARDS: usize = 64;

/// The value of a `shards=` key (absent: 1).
fn shards(part: &str, v: Option<&str>) -> Result<usize, SpecError> {
    match v {
        None => Ok(1),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_SHARDS).contains(n))
            .ok_or_else(|| {
                err(
                    part,
                    format!("shards must be a whole number from 1 to {MAX_SHARDS}, not '{v}'"),
                )
            }),
    }
}

/// Why a spec was refused: the part at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The offending part of the spec, as written (may be empty for an empty spec).
    pub part: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.part.is_empty() {
            write!(f, "bad spec: {}", self.reason)
        } else {
            write!(f, "bad spec at '{}': {}", self.part, self.reason)
        }
    }
}

impl std::error::Error for SpecError {}

fn err(part: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        part: part.to_string(),
        reason: reason.into(),
    }
}

/// Parse a size: decimal digits with an optional binary unit K, M or G.
pub fn parse_size(part: &str, v: &str) -> Result<u64, SpecError> {
    let (digits, mult) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => {
                    return Err(err(
                        part,
                        format!("unknown size unit '{c}' (use K, M or G)"),
                    ))
                }
            };
            (&v[..i], m)
        }
        _ => (v, 1),
    };
    if digits.is_empty() {
        return Err(err(part, "size has no digits"));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(
            part,
            format!("'{v}' is not a size (digits with optional K, M or G)"),
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| err(part, format!("size '{v}' is too large")))
}

/// Options of one part, checked as they are taken.
struct Opts<'a> {
    part: &'a str,
    kv: Vec<(&'a str, &'a str)>,
}

impl<'a> Opts<'a> {
    fn parse(part: &'a str, opts: Option<&'a str>) -> Result<Self, SpecError> {
        let mut kv = Vec::new();
        if let Some(opts) = opts {
            if opts.is_empty() {
                return Err(err(part, "':' must be followed by key=value options"));
            }
            for item in opts.split(',') {
                let (k, v) = item
                    .split_once('=')
                    .ok_or_else(|| err(part, format!("option '{item}' is not key=value")))?;
                if k.is_empty() || v.is_empty() {
                    return Err(err(part, format!("option '{item}' is not key=value")));
                }
                if kv.iter().any(|&(k2, _)| k2 == k) {
                    return Err(err(part, format!("option '{k}' given twice")));
                }
                kv.push((k, v));
            }
        }
        Ok(Opts { part, kv })
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        let i = self.kv.iter().position(|&(k, _)| k == key)?;
        Some(self.kv.remove(i).1)
    }

    fn size(&mut self, key: &str, default: Option<u64>) -> Result<u64, SpecError> {
        match self.take(key) {
            Some(v) => {
                let n = parse_size(self.part, v)?;
                if n == 0 {
                    return Err(err(self.part, format!("{key} must be greater than 0")));
                }
                Ok(n)
            }
            None => default.ok_or_else(|| err(self.part, format!("{key}=SIZE is required"))),
        }
    }

    fn usize(&mut self, key: &str, default: Option<u64>) -> Result<usize, SpecError> {
        let n = self.size(key, default)?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| err(self.part, format!("{key} is too large for this machine")))
    }

    /// A whole number without units, from `min` to `i64::MAX`.
    fn count(&mut self, key: &str, min: u64) -> Result<Option<u64>, SpecError> {
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        v.parse::<u64>()
            .ok()
            .filter(|n| (min..=i64::MAX as u64).contains(n))
            .map(Some)
            .ok_or_else(|| {
                err(
                    self.part,
                    format!(
                        "{key} must be a whole number from {min} to {} (no units), not '{v}'",
                        i64::MAX
                    ),
                )
            })
    }

    /// A probability: a decimal fraction 0..1 or a percentage 0%..100%.
    fn rate(&mut self, key: &str) -> Result<Option<f64>, SpecError> {
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        let (num, scale) = match v.strip_suffix('%') {
            Some(n) => (n, 100.0),
            None => (v, 1.0),
        };
        num.parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && num.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .map(|r| r / scale)
            .filter(|r| (0.0..=1.0).contains(r))
            .map(Some)
            .ok_or_else(|| {
                err(
                    self.part,
                    format!("{key} must be a fraction from 0 to 1 or a percentage from 0% to 100%, not '{v}'"),
                )
            })
    }

    fn fault(&mut self) -> Result<FaultSpec, SpecError> {
        let part = self.part;
        let benign = match self.take("benign") {
            None | Some("count") => Benign::Count,
            Some("skip") => Benign::Skip,
            Some(v) => {
                return Err(err(
                    part,
                    format!("benign must be count or skip, not '{v}'"),
                ))
            }
        };
        let nth = self.count("nth", 1)?;
        let repeat = self.count("repeat", 0)?;
        let every = self.count("every", 1)?;
        let seed = self.count("seed", 0)?;
        let rate = self.rate("rate")?;
        let plan = match (nth, every, rate) {
            (None, None, None) => FaultPlan::Off,
            (Some(nth), None, None) => FaultPlan::Nth {
                nth,
                repeat: repeat.unwrap_or(1),
            },
            (None, Some(n), None) => FaultPlan::Every(n),
            (None, None, Some(r)) => FaultPlan::random(seed.unwrap_or(0), r)
                .ok_or_else(|| err(part, "rate out of range"))?,
            _ => return Err(err(part, "give only one of nth, every and rate")),
        };
        if repeat.is_some() && nth.is_none() {
            return Err(err(part, "repeat needs nth"));
        }
        if seed.is_some() && rate.is_none() {
            return Err(err(part, "seed needs rate"));
        }
        Ok(FaultSpec { plan, benign })
    }

    fn done(self) -> Result<(), SpecError> {
        match self.kv.first() {
            None => Ok(()),
            Some((k, _)) => Err(err(self.part, format!("unknown option '{k}'"))),
        }
    }
}

impl Spec {
    /// Parse a spec string.
    pub fn parse(spec: &str) -> Result<Spec, SpecError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(err(
                "",
                format!(
                    "empty spec (expected a backend: {})",
                    BACKEND_NAMES.join(", ")
                ),
            ));
        }
        if let Some(c) = spec.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(
                spec,
                format!("unexpected character {c:?} inside the spec"),
            ));
        }
        let mut parts = spec.split('+');
        let first = parts.next().unwrap_or_default();
        let backend = Self::backend(first)?;
        let mut limit = None;
        let mut fault = None;
        let mut scopes = false;
        for part in parts {
            let (name, opts) = split_part(part);
            let mut o = Opts::parse(part, opts)?;
            match name {
                "limit" => {
                    if limit.is_some() {
                        return Err(err(part, "layer 'limit' given twice"));
                    }
                    limit = Some(o.size("max", None)?);
                }
                "fault" => {
                    if fault.is_some() {
                        return Err(err(part, "layer 'fault' given twice"));
                    }
                    fault = Some(o.fault()?);
                }
                "scopes" => {
                    if scopes {
                        return Err(err(part, "layer 'scopes' given twice"));
                    }
                    if opts.is_some() {
                        return Err(err(part, "layer 'scopes' takes no options"));
                    }
                    scopes = true;
                }
                "" => return Err(err(part, "empty layer after '+'")),
                _ if BACKEND_NAMES.contains(&name) => {
                    return Err(err(part, "only one backend, and it comes first"))
                }
                _ => {
                    return Err(err(
                        part,
                        format!("unknown layer '{name}' (known: limit, fault, scopes)"),
                    ))
                }
            }
            o.done()?;
        }
        Ok(Spec {
            backend,
            limit,
            fault,
            scopes,
        })
    }

    fn backend(part: &str) -> Result<Backend, SpecError> {
        let (name, opts) = split_part(part);
        let mut o = Opts::parse(part, opts)?;
        let b = match name {
            "system" => Backend::System,
            "debug" => {
                let depth = match o.take("backtrace") {
                    None => 0,
                    Some(v) => v
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n <= MAX_BACKTRACE)
                        .ok_or_else(|| {
                            err(part, format!("backtrace must be a number of frames from 0 to {MAX_BACKTRACE}, not '{v}'"))
                        })?,
                };
                Backend::Debug { backtrace: depth }
            }
            "memsys3" => Backend::Memsys3 {
                heap: o.usize("heap", Some(16 << 20))?,
                bias: bias(part, o.take("bias"))?,
            },
            "memsys5" => {
                let heap = o.usize("heap", Some(64 << 20))?;
                let min = match o.take("min") {
                    None => 0,
                    Some(v) => usize::try_from(parse_size(part, v)?)
                        .map_err(|_| err(part, "min is too large"))?,
                };
                let shards = shards(part, o.take("shards"))?;
                let bias = bias(part, o.take("bias"))?;
                Backend::Memsys5 {
                    heap,
                    min,
                    shards,
                    bias,
                }
            }
            "tlsf" => Backend::Tlsf {
                heap: o.usize("heap", Some(64 << 20))?,
                shards: shards(part, o.take("shards"))?,
                bias: bias(part, o.take("bias"))?,
                cache: match o.take("cache") {
                    None => crate::backend::tlsf::DEFAULT_CACHE,
                    Some(v) => v
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n <= MAX_CACHE)
                        .ok_or_else(|| {
                            err(
                                part,
                                format!("cache must be a number of blocks from 0 to {MAX_CACHE}, not '{v}'"),
                            )
                        })?,
                },
            },
            "jemalloc" => {
                built_in(part, name, cfg!(feature = "jemalloc"))?;
                Backend::Jemalloc
            }
            "mimalloc" => {
                built_in(part, name, cfg!(feature = "mimalloc"))?;
                Backend::Mimalloc
            }
            "rust" => Backend::Rust,
            "" => return Err(err(part, "missing backend name")),
            "limit" | "fault" | "scopes" => {
                return Err(err(
                    part,
                    "a spec starts with a backend, not a layer (try system+limit:...)",
                ))
            }
            _ => {
                return Err(err(
                    part,
                    format!(
                        "unknown backend '{name}' (known: {})",
                        BACKEND_NAMES.join(", ")
                    ),
                ))
            }
        };
        o.done()?;
        Ok(b)
    }
}

fn split_part(part: &str) -> (&str, Option<&str>) {
    match part.split_once(':') {
        Some((n, o)) => (n, Some(o)),
        None => (part, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_specs() {
        assert_eq!(
            Spec::parse("system").unwrap(),
            Spec {
                backend: Backend::System,
                limit: None,
                fault: None,
                scopes: false,
            }
        );
        assert_eq!(
            Spec::parse(" memsys5:heap=64M,min=64+limit:max=48M ").unwrap(),
            Spec {
                backend: Backend::Memsys5 {
                    heap: 64 << 20,
                    min: 64,
                    shards: 1,
                    bias: true
                },
                limit: Some(48 << 20),
                fault: None,
                scopes: false,
            }
        );
        let sc = Spec::parse("memsys5:heap=256M+scopes+limit:max=1G").unwrap();
        assert!(sc.scopes);
        assert_eq!(sc.limit, Some(1 << 30));
        assert!(Spec::parse("system+scopes").unwrap().scopes);
        assert_eq!(
            Spec::parse("memsys5:heap=1M,shards=4").unwrap().backend,
            Backend::Memsys5 {
                heap: 1 << 20,
                min: 0,
                shards: 4,
                bias: true
            }
        );
        assert_eq!(
            Spec::parse("debug:backtrace=8").unwrap().backend,
            Backend::Debug { backtrace: 8 }
        );
        assert_eq!(
            Spec::parse("memsys3:heap=16m").unwrap().backend,
            Backend::Memsys3 {
                heap: 16 << 20,
                bias: true
            }
        );
        assert_eq!(
            Spec::parse("memsys3:bias=off").unwrap().backend,
            Backend::Memsys3 {
                heap: 16 << 20,
                bias: false
            }
        );
        assert_eq!(
            Spec::parse("memsys5:heap=1M,bias=off,shards=2")
                .unwrap()
                .backend,
            Backend::Memsys5 {
                heap: 1 << 20,
                min: 0,
                shards: 2,
                bias: false
            }
        );
        assert_eq!(
            Spec::parse("memsys5:bias=on").unwrap().backend,
            Spec::parse("memsys5").unwrap().backend
        );
        assert_eq!(
            Spec::parse("system+limit:max=1G").unwrap().limit,
            Some(1 << 30)
        );
        assert_eq!(
            Spec::parse("system+limit:max=100").unwrap().limit,
            Some(100)
        );
        assert_eq!(
            Spec::parse("tlsf").unwrap().backend,
            Backend::Tlsf {
                heap: 64 << 20,
                shards: 1,
                bias: true,
                cache: 16
            }
        );
        assert_eq!(
            Spec::parse("tlsf:heap=3M,shards=4,bias=off+limit:max=1M")
                .unwrap()
                .backend,
            Backend::Tlsf {
                heap: 3 << 20,
                shards: 4,
                bias: false,
                cache: 16
            }
        );
        assert_eq!(
            Spec::parse("tlsf:cache=0").unwrap().backend,
            Backend::Tlsf {
                heap: 64 << 20,
                shards: 1,
                bias: true,
                cache: 0
            }
        );
        assert!(matches!(
            Spec::parse("tlsf:cache=64,heap=1M").unwrap().backend,
            Backend::Tlsf { cache: 64, .. }
        ));
        assert_eq!(
            Spec::parse("tlsf:bias=on").unwrap().backend,
            Spec::parse("tlsf:heap=64M").unwrap().backend
        );
        assert_eq!(
            Spec::parse("memsys5:min=0").unwrap().backend,
            Backend::Memsys5 {
                heap: 64 << 20,
                min: 0,
                shards: 1,
                bias: true
            }
        );
    }

    #[test]
    fn fault_layer() {
        let f = |spec: &str| Spec::parse(spec).unwrap().fault.unwrap();
        assert_eq!(f("system+fault"), FaultSpec::default());
        assert_eq!(
            f("system+fault:nth=1").plan,
            FaultPlan::Nth { nth: 1, repeat: 1 }
        );
        assert_eq!(
            f("memsys5+fault:nth=10,repeat=0,benign=skip"),
            FaultSpec {
                plan: FaultPlan::Nth { nth: 10, repeat: 0 },
                benign: Benign::Skip
            }
        );
        assert_eq!(f("system+fault:every=7").plan, FaultPlan::Every(7));
        assert_eq!(
            f("system+fault:seed=9,rate=0.5").plan,
            FaultPlan::random(9, 0.5).unwrap()
        );
        assert_eq!(
            f("system+fault:rate=25%").plan,
            FaultPlan::random(0, 0.25).unwrap()
        );
        assert_eq!(
            f("system+fault:rate=1").plan,
            FaultPlan::random(0, 1.0).unwrap()
        );
        let s = Spec::parse("system+fault:every=3+limit:max=1M").unwrap();
        assert_eq!(s.limit, Some(1 << 20));
        assert_eq!(s.fault.unwrap().plan, FaultPlan::Every(3));
        let cases: &[(&str, &str)] = &[
            ("system+fault:nth=0", "nth must be a whole number from 1"),
            ("system+fault:nth=1K", "no units"),
            ("system+fault:nth=-1", "no units"),
            (
                "system+fault:nth=9223372036854775808",
                "from 1 to 9223372036854775807",
            ),
            ("system+fault:every=0", "every must be"),
            ("system+fault:repeat=2", "repeat needs nth"),
            ("system+fault:seed=2", "seed needs rate"),
            ("system+fault:nth=1,every=2", "only one of"),
            ("system+fault:every=2,rate=0.1", "only one of"),
            ("system+fault:rate=1.5", "fraction from 0 to 1"),
            ("system+fault:rate=101%", "fraction from 0 to 1"),
            ("system+fault:rate=-0.1", "fraction from 0 to 1"),
            ("system+fault:rate=nan", "fraction from 0 to 1"),
            ("system+fault:benign=maybe", "benign must be count or skip"),
            ("system+fault:bogus=1", "unknown option 'bogus'"),
            ("system+fault+fault", "layer 'fault' given twice"),
            ("fault:nth=1", "starts with a backend"),
        ];
        for &(spec, reason) in cases {
            let e = Spec::parse(spec).expect_err(spec);
            assert!(e.reason.contains(reason), "reason for {spec:?}: {e}");
        }
    }

    #[test]
    fn optional_backends() {
        assert_eq!(Spec::parse("rust").unwrap().backend, Backend::Rust);
        for (name, on, b) in [
            ("jemalloc", cfg!(feature = "jemalloc"), Backend::Jemalloc),
            ("mimalloc", cfg!(feature = "mimalloc"), Backend::Mimalloc),
        ] {
            let spec = format!("{name}+limit:max=1M");
            match Spec::parse(&spec) {
                Ok(s) => {
                    assert!(on, "{name} parsed without its feature");
                    assert_eq!((s.backend, s.limit), (b, Some(1 << 20)));
                }
                Err(e) => {
                    assert!(!on, "{name}: {e}");
                    assert_eq!(e.part, name);
                    assert_eq!(
                        e.reason,
                        format!(
                            "backend '{name}' is not built in (enable the cargo feature {name})"
                        )
                    );
                }
            }
        }
    }

    #[test]
    fn bad_specs_name_the_part() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "", "empty spec"),
            ("   ", "", "empty spec"),
            ("bogus", "bogus", "unknown backend 'bogus'"),
            ("system:heap=1M", "system:heap=1M", "unknown option 'heap'"),
            (
                "memsys5:heap=12X",
                "memsys5:heap=12X",
                "unknown size unit 'X'",
            ),
            (
                "memsys5:heap=0",
                "memsys5:heap=0",
                "heap must be greater than 0",
            ),
            ("memsys5:heap=-5", "memsys5:heap=-5", "not a size"),
            (
                "memsys5:heap=99999999999999999999",
                "memsys5:heap=99999999999999999999",
                "too large",
            ),
            (
                "memsys5:heap=17179869184G",
                "memsys5:heap=17179869184G",
                "too large",
            ),
            ("memsys5:heap=M", "memsys5:heap=M", "no digits"),
            ("memsys5:heap", "memsys5:heap", "not key=value"),
            ("memsys5:", "memsys5:", "must be followed"),
            (
                "memsys5:heap=1M,heap=2M",
                "memsys5:heap=1M,heap=2M",
                "given twice",
            ),
            ("system+limit", "limit", "max=SIZE is required"),
            ("system+limit:max=0", "limit:max=0", "greater than 0"),
            (
                "system+limit:max=1M+limit:max=2M",
                "limit:max=2M",
                "given twice",
            ),
            ("system+", "", "empty layer"),
            ("system+bogus:x=1", "bogus:x=1", "unknown layer 'bogus'"),
            (
                "system+scopes+scopes",
                "scopes",
                "layer 'scopes' given twice",
            ),
            (
                "system+scopes:max=3",
                "scopes:max=3",
                "layer 'scopes' takes no options",
            ),
            ("system+scopes:", "scopes:", "must be followed by key=value"),
            ("scopes", "scopes", "a spec starts with a backend"),
            ("system+memsys5", "memsys5", "only one backend"),
            ("limit:max=1M", "limit:max=1M", "starts with a backend"),
            (
                "memsys5:shards=0",
                "memsys5:shards=0",
                "shards must be a whole number from 1 to 64",
            ),
            (
                "memsys5:shards=65",
                "memsys5:shards=65",
                "from 1 to 64, not '65'",
            ),
            ("memsys5:shards=two", "memsys5:shards=two", "not 'two'"),
            (
                "memsys5:bias=no",
                "memsys5:bias=no",
                "bias must be 'on' or 'off', not 'no'",
            ),
            (
                "memsys3:bias=1",
                "memsys3:bias=1",
                "bias must be 'on' or 'off'",
            ),
            (
                "system:bias=off",
                "system:bias=off",
                "unknown option 'bias'",
            ),
            ("debug:backtrace=65", "debug:backtrace=65", "from 0 to 64"),
            ("debug:backtrace=x", "debug:backtrace=x", "from 0 to 64"),
            ("sys tem", "sys tem", "unexpected character"),
            (":heap=1", ":heap=1", "missing backend"),
            ("rust:x=1", "rust:x=1", "unknown option 'x'"),
            ("jemalloc:x=1", "jemalloc:x=1", ""),
            ("system+rust", "rust", "only one backend"),
            ("tlsf:heap=0", "tlsf:heap=0", "heap must be greater than 0"),
            ("tlsf:heap=1Q", "tlsf:heap=1Q", "unknown size unit 'Q'"),
            (
                "tlsf:shards=0",
                "tlsf:shards=0",
                "shards must be a whole number from 1 to 64, not '0'",
            ),
            ("tlsf:shards=65", "tlsf:shards=65", "from 1 to 64"),
            (
                "tlsf:cache=65",
                "tlsf:cache=65",
                "cache must be a number of blocks from 0 to 64, not '65'",
            ),
            ("tlsf:cache=-1", "tlsf:cache=-1", "from 0 to 64"),
            ("tlsf:cache=4K", "tlsf:cache=4K", "from 0 to 64"),
            (
                "memsys5:cache=4",
                "memsys5:cache=4",
                "unknown option 'cache'",
            ),
            ("tlsf:min=8", "tlsf:min=8", "unknown option 'min'"),
            (
                "tlsf:bias=yes",
                "tlsf:bias=yes",
                "bias must be 'on' or 'off'",
            ),
            (
                "tlsf:heap=1M,heap=1M",
                "tlsf:heap=1M,heap=1M",
                "given twice",
            ),
            ("memsys5+tlsf", "tlsf", "only one backend"),
        ];
        for &(spec, part, reason) in cases {
            let e = Spec::parse(spec).expect_err(spec);
            assert_eq!(e.part, part, "part for {spec:?}: {e}");
            assert!(e.reason.contains(reason), "reason for {spec:?}: {e}");
            assert!(e.to_string().starts_with("bad spec"));
        }
    }
}
