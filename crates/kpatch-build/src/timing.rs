//! Wall-clock time of each pipeline stage, for progress output and the benchmark.

use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings(pub Vec<(String, Duration)>);

impl Timings {
    pub fn push(&mut self, stage: &str, d: Duration) {
        self.0.push((stage.to_string(), d));
    }
    pub fn extend(&mut self, other: &Timings) {
        self.0.extend(other.0.iter().cloned());
    }
    pub fn get(&self, stage: &str) -> Option<Duration> {
        self.0.iter().find(|(s, _)| s == stage).map(|(_, d)| *d)
    }
}
