//! A collector for the official Rust Prometheus client, [`prometheus-client`](https://docs.rs/prometheus-client)
//! (feature `prometheus-client`): every `sqlite_memory_*` family of the installed allocator's
//! report ([`crate::report::families`]) in a service's own registry, read at each scrape.
//!
//! ```
//! # use libsqlite3_sys as _;
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(sqlalloc::prometheus_client::Collector));
//! let mut body = String::new();
//! prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
//! ```
//!
//! The families and values are those of the scrape endpoint, with one exception: the
//! request-size histogram is left out, because the client's histogram needs the sum of the
//! observations, which sqlalloc does not keep. (Append [`crate::metrics`] to a text response to
//! have it.) Counters are registered without their `_total` suffix, which the client adds back.

use crate::report::{families, MetricType, Report};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::fmt;

/// Reads the installed allocator's report at each scrape; registers nothing when no allocator is
/// installed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Collector;

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let Some(report) = Report::capture_installed() else {
            return Ok(());
        };
        for f in families(&report) {
            let labels = |s: &crate::report::Sample| -> Vec<(String, String)> {
                s.labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), v.clone()))
                    .collect()
            };
            match f.kind {
                MetricType::Histogram => {}
                MetricType::Gauge => {
                    let probe = ConstGauge::new(0i64);
                    let mut family =
                        encoder.encode_descriptor(&f.name, &f.help, None, probe.metric_type())?;
                    for s in &f.samples {
                        ConstGauge::new(s.value).encode(family.encode_family(&labels(s))?)?;
                    }
                }
                MetricType::Counter => {
                    let name = f.name.strip_suffix("_total").unwrap_or(&f.name);
                    let probe = ConstCounter::new(0u64);
                    let mut family =
                        encoder.encode_descriptor(name, &f.help, None, probe.metric_type())?;
                    for s in &f.samples {
                        let v = u64::try_from(s.value).unwrap_or(0);
                        ConstCounter::new(v).encode(family.encode_family(&labels(s))?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
