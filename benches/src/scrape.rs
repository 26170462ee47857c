//! Reading a binary's `/metrics` (the Prometheus text format): the figures the report and the
//! tests compare with what clients were told and what MySQL holds.

use std::collections::BTreeSet;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// One scrape: every sample, by name and labels.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// The text as served.
    pub text: String,
    samples: Vec<Sample>,
}

#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Scrape {
    /// `GET url` (e.g. `http://127.0.0.1:9464/metrics`), parsed.
    ///
    /// # Errors
    ///
    /// The server did not answer 200, or the text is not the Prometheus format.
    pub async fn get(url: &str) -> anyhow::Result<Self> {
        Self::parse(get_text(url).await?)
    }

    /// Parses the text format.
    ///
    /// # Errors
    ///
    /// A line that is no sample, comment or blank.
    pub fn parse(text: String) -> anyhow::Result<Self> {
        let samples = text
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .map(|line| sample(line).with_context(|| format!("not a sample: {line:?}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { text, samples })
    }

    /// The sum of the samples of `name` whose labels include every one of `labels` (all of
    /// them when `labels` is empty); 0 when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The upper bound of the bucket of histogram `name` (summed over its series) that holds
    /// quantile `q` (0 to 1): "q of the samples took at most this". `None` without samples.
    pub fn quantile(&self, name: &str, q: f64) -> Option<f64> {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let bucket = format!("{name}_bucket");
        for sample in self.matching(&bucket, &[]) {
            let le = sample
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .and_then(|(_, v)| match v.as_str() {
                    "+Inf" => Some(f64::INFINITY),
                    v => v.parse().ok(),
                })?;
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, count)) => *count += sample.value,
                None => buckets.push((le, sample.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total == 0.0 {
            return None;
        }
        buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= q * total)
            .map(|(bound, _)| *bound)
    }

    /// Whether a sample of `name` with `labels` exists.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// The names of the metric families, as their `# TYPE` lines give them (a histogram's
    /// family is its name without `_bucket`, `_sum`, `_count`).
    pub fn families(&self) -> BTreeSet<String> {
        self.text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }
}

/// `GET url`, as text.
///
/// # Errors
///
/// No answer, an answer other than 2xx (its text in the error), or a body that is not UTF-8.
pub async fn get_text(url: &str) -> anyhow::Result<String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let response = client
        .get(uri)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8(body.to_vec()).context("the answer is not UTF-8")?;
    anyhow::ensure!(status.is_success(), "GET {url}: {status} {text}");
    Ok(text)
}

/// `name{label="value",...} value` or `name value`.
fn sample(line: &str) -> anyhow::Result<Sample> {
    let (head, value) = line.rsplit_once(' ').context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().context("value")?,
    };
    let (name, labels) = match head.split_once('{') {
        None => (head, Vec::new()),
        Some((name, rest)) => (name, labels(rest.strip_suffix('}').context("no '}'")?)?),
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"`, with `\"`, `\\` and `\n` escapes in values.
fn labels(mut rest: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").context("label without =\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().context("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().context("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_their_labels() {
        let scrape = Scrape::parse(
            "# TYPE a_total counter\na_total{campaign=\"x\",outcome=\"success\"} 3\n\
             a_total{campaign=\"\",outcome=\"invalid\"} 2\n# TYPE h histogram\n\
             h_bucket{le=\"+Inf\"} 5\nh_count 5\nq{v=\"a\\\"b\"} 1\n"
                .to_owned(),
        )
        .unwrap();
        assert_eq!(scrape.sum("a_total", &[]), 5.0);
        assert_eq!(scrape.sum("a_total", &[("outcome", "success")]), 3.0);
        assert_eq!(scrape.sum("a_total", &[("campaign", "")]), 2.0);
        assert_eq!(scrape.sum("h_count", &[]), 5.0);
        assert!(scrape.has("q", &[("v", "a\"b")]));
        let histogram = Scrape::parse(
            "t_bucket{le=\"0.1\",i=\"a\"} 5\nt_bucket{le=\"1\",i=\"a\"} 9\nt_bucket{le=\"+Inf\",i=\"a\"} 10\n\
             t_bucket{le=\"0.1\",i=\"b\"} 5\nt_bucket{le=\"1\",i=\"b\"} 10\nt_bucket{le=\"+Inf\",i=\"b\"} 10\n"
                .to_owned(),
        )
        .unwrap();
        assert_eq!(histogram.quantile("t", 0.5), Some(0.1));
        assert_eq!(histogram.quantile("t", 0.95), Some(1.0));
        assert_eq!(histogram.quantile("t", 1.0), Some(f64::INFINITY));
        assert_eq!(histogram.quantile("none", 0.5), None);
        assert!(!scrape.has("a_total", &[("outcome", "duplicate")]));
        assert_eq!(
            scrape.families().into_iter().collect::<Vec<_>>(),
            ["a_total", "h"]
        );
    }
}
