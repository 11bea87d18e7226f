//! Prometheus text exposition, parsed for adding up across peers.
//!
//! A whole-network run reads the same counters from tens or hundreds of
//! peers and must add them: counters and gauges sum, histograms sum bucket
//! by bucket (every peer uses the same bucket bounds), labelled families
//! sum per label value. So a scrape is kept as a flat list of samples and
//! every question is a fold over it. Only what the peer and tracker export
//! is handled: no exemplars, no timestamps, no escaped quotes in labels.

use std::collections::BTreeMap;

/// One parsed `/metrics` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// (metric name, label text between the braces, value).
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    /// Parse the text format; comment and malformed lines are skipped.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (head, value) = l.trim().rsplit_once(' ')?;
                let value: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().ok()?,
                };
                let (name, labels) = match head.split_once('{') {
                    Some((n, rest)) => (n, rest.strip_suffix('}')?),
                    None => (head, ""),
                };
                Some((name.to_owned(), labels.to_owned(), value))
            })
            .collect();
        Scrape { samples }
    }

    /// Sum of every sample named `name`, whatever its labels (0 if absent).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.0 == name)
            .map(|s| s.2)
            .sum()
    }

    /// Samples of `name` by the value of `label` (summed over other labels).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, labels, v) in &self.samples {
            if n == name {
                if let Some(value) = label_value(labels, label) {
                    *out.entry(value.to_owned()).or_insert(0.0) += v;
                }
            }
        }
        out
    }

    /// Histogram `name` (its `_bucket`, `_sum` and `_count` samples).
    pub fn histogram(&self, name: &str) -> Hist {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.0 == bucket)
            .filter_map(|(_, labels, v)| {
                let le = match label_value(labels, "le")? {
                    "+Inf" => f64::INFINITY,
                    x => x.parse().ok()?,
                };
                Some((le, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Hist {
            buckets,
            sum: self.sum(&format!("{name}_sum")),
            count: self.sum(&format!("{name}_count")),
        }
    }
}

/// The value of `label` in `a="x",b="y"`.
fn label_value<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == label).then(|| v.trim().trim_matches('"'))
    })
}

/// A Prometheus histogram: cumulative `(upper bound, count)` buckets in
/// increasing order with `+Inf` last, the sum and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    /// Upper bounds with cumulative counts.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Hist {
    /// Add `other` (same bucket bounds; a bound only one side has is kept).
    pub fn add(&mut self, other: &Hist) {
        for &(le, c) in &other.buckets {
            match self.buckets.iter_mut().find(|b| b.0 == le) {
                Some(b) => b.1 += c,
                None => self.buckets.push((le, c)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.sum += other.sum;
        self.count += other.count;
    }

    /// Observations made after `earlier` was read (same source).
    pub fn since(&self, earlier: &Hist) -> Hist {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, c)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|b| b.0 == le)
                    .map_or(0.0, |b| b.1);
                (le, (c - before).max(0.0))
            })
            .collect();
        Hist {
            buckets,
            sum: self.sum - earlier.sum,
            count: (self.count - earlier.count).max(0.0),
        }
    }

    /// Mean observation (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }

    /// Upper bound of the bucket holding quantile `q`: the true value is at
    /// or below it. `None` when empty.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let rank = self.rank(q)?;
        self.buckets.iter().find(|b| b.1 >= rank).map(|b| b.0)
    }

    /// Quantile `q` interpolated linearly inside its bucket, as
    /// Prometheus's `histogram_quantile` does (the `+Inf` bucket answers
    /// its lower bound). `None` when empty.
    pub fn quantile_estimate(&self, q: f64) -> Option<f64> {
        let rank = self.rank(q)?;
        let mut prev = (0.0, 0.0);
        for &(le, c) in &self.buckets {
            if c >= rank {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let width = c - prev.1;
                let frac = if width > 0.0 {
                    (rank - prev.1) / width
                } else {
                    1.0
                };
                return Some(prev.0 + (le - prev.0) * frac);
            }
            prev = (le, c);
        }
        None
    }

    fn rank(&self, q: f64) -> Option<f64> {
        (self.count > 0.0).then(|| (q * self.count).ceil().max(1.0))
    }

    /// Per-bucket (not cumulative) counts with their upper bounds.
    pub fn per_bucket(&self) -> Vec<(f64, f64)> {
        let mut prev = 0.0;
        self.buckets
            .iter()
            .map(|&(le, c)| {
                let n = c - prev;
                prev = c;
                (le, n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n# TYPE h histogram\n\
        h_bucket{le=\"0.001\"} 2\nh_bucket{le=\"0.01\"} 9\nh_bucket{le=\"+Inf\"} 10\n\
        h_sum 0.05\nh_count 10\nc 4\n\
        a_total{result=\"ok\"} 7\na_total{result=\"stale\"} 1\nbroken line\n";

    #[test]
    fn samples_sum_and_split_by_label() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("c"), 4.0);
        assert_eq!(s.sum("a_total"), 8.0);
        assert_eq!(s.sum("missing"), 0.0);
        let by = s.by_label("a_total", "result");
        assert_eq!(by["ok"], 7.0);
        assert_eq!(by["stale"], 1.0);
        assert_eq!(label_value("a=\"1\",le=\"+Inf\"", "le"), Some("+Inf"));
    }

    #[test]
    fn histograms_add_subtract_and_give_quantiles() {
        let h = Scrape::parse(TEXT).histogram("h");
        assert_eq!(h.buckets.len(), 3);
        assert_eq!(h.count, 10.0);
        assert_eq!(h.quantile_bound(0.5), Some(0.01));
        assert_eq!(h.quantile_bound(0.2), Some(0.001));
        assert_eq!(h.quantile_bound(0.99), Some(f64::INFINITY));
        // Rank 5 of 10 lies 3/7 of the way through (0.001, 0.01].
        let est = h.quantile_estimate(0.5).unwrap();
        assert!((est - (0.001 + 0.009 * 3.0 / 7.0)).abs() < 1e-12, "{est}");
        assert_eq!(h.quantile_estimate(0.99), Some(0.01));
        assert!((h.mean() - 0.005).abs() < 1e-12);
        let mut twice = h.clone();
        twice.add(&h);
        assert_eq!(twice.count, 20.0);
        assert_eq!(twice.buckets[1], (0.01, 18.0));
        assert_eq!(twice.since(&h), h);
        let before = Scrape::parse("h_bucket{le=\"0.001\"} 2\nh_count 2\n").histogram("h");
        let d = h.since(&before);
        assert_eq!(d.count, 8.0);
        assert_eq!(d.quantile_bound(0.5), Some(0.01));
        assert_eq!(
            h.per_bucket(),
            vec![(0.001, 2.0), (0.01, 7.0), (f64::INFINITY, 1.0)]
        );
        let mut empty = Hist::default();
        assert_eq!(empty.quantile_bound(0.5), None);
        assert_eq!(empty.quantile_estimate(0.5), None);
        empty.add(&h);
        assert_eq!(empty, h);
    }
}
