//! OpenTelemetry export (`--otlp-endpoint`): a 3-node cluster and the CLI
//! export to a small OTLP/gRPC collector run by this test; one `put` sent
//! first to a node that does not lead its range must arrive as one trace:
//! the CLI's span, the RPC spans of both nodes it reached (parented by the
//! trace context the CLI sent in gRPC metadata), and on the leader the Raft
//! proposal and its apply inside its RPC, and under that RPC a span of
//! another node (the timestamp oracle's: a node -> node hop).
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// One exported span, as the collector received it.
#[derive(Clone, Debug)]
struct Got {
    instance: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Got>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let instance = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.instance.id")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                got.push(Got {
                    instance: instance.clone(),
                    name: s.name,
                    trace: s.trace_id,
                    id: s.span_id,
                    parent: s.parent_span_id,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The client address of the node that leads the range holding `key`,
/// per cluster status (it may move at any time: the trace has the truth).
fn leader_of(endpoints: &str, key: &str) -> Option<String> {
    let status = cluster_status(endpoints);
    let holding = status["ranges"].as_array()?.iter().find(|r| {
        r["system"] == false
            && r["from"].as_str().is_some_and(|f| f <= key)
            && r["to"].as_str().is_some_and(|t| t.is_empty() || key < t)
    })?;
    let node = holding["leader"].as_u64()?;
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node_id"].as_u64() == Some(node))?["client_address"]
        .as_str()
        .map(str::to_string)
}

/// What one traced put's trace shows.
#[derive(Debug, Default)]
struct Verdict {
    /// Server instances with a `Kv/Put` span under the CLI's span.
    put_nodes: Vec<String>,
    /// The instance that proposed and applied it (its `Kv/Put` span holds
    /// `raft.propose` holding `raft.apply`).
    applied_on: Option<String>,
    /// A span of another node under the applying node's `Kv/Put` (the
    /// oracle's `Admin/GetTimestamps`: a node -> node hop).
    hop: Option<String>,
}

/// Judges the trace under the CLI span named `root_name`, if it arrived.
fn judge(spans: &[Got], root_name: &str) -> Option<(Verdict, Vec<(String, String)>)> {
    let root = spans
        .iter()
        .find(|s| s.instance == "cli" && s.name == root_name)?;
    let trace: Vec<&Got> = spans.iter().filter(|s| s.trace == root.trace).collect();
    let by_id: BTreeMap<&[u8], &Got> = trace.iter().map(|s| (s.id.as_slice(), *s)).collect();
    // Is `s` (transitively) under span `anc`?
    let under = |s: &Got, anc: &Got| {
        let mut p = s.parent.as_slice();
        for _ in 0..32 {
            if p == anc.id.as_slice() {
                return true;
            }
            match by_id.get(p) {
                Some(up) => p = up.parent.as_slice(),
                None => return false,
            }
        }
        false
    };
    let puts: Vec<&Got> = trace
        .iter()
        .filter(|s| s.instance != "cli" && s.name == "rangedb.Kv/Put" && under(s, root))
        .copied()
        .collect();
    let mut v = Verdict::default();
    for p in &puts {
        if !v.put_nodes.contains(&p.instance) {
            v.put_nodes.push(p.instance.clone());
        }
        let applied = trace.iter().any(|s| {
            s.instance == p.instance
                && s.name == "raft.apply"
                && under(s, p)
                && by_id
                    .get(s.parent.as_slice())
                    .is_some_and(|q| q.name == "raft.propose" && q.instance == p.instance)
        });
        if applied {
            v.applied_on = Some(p.instance.clone());
            v.hop = trace
                .iter()
                .find(|s| s.instance != p.instance && s.instance != "cli" && under(s, p))
                .map(|s| format!("{} on {}", s.name, s.instance));
        }
    }
    let names = trace
        .iter()
        .map(|s| (s.name.clone(), s.instance.clone()))
        .collect();
    Some((v, names))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puts_spans_from_two_nodes_arrive_as_one_trace() {
    let collector = Collector::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    drop(listener);
    let serve = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve(at);
    tokio::spawn(serve);
    let endpoint = format!("http://{at}");

    let dir = tempfile::tempdir().unwrap();
    let extra = vec![format!("--otlp-endpoint={endpoint}")];
    let servers = start_cluster_with(dir.path(), 3, &[], &extra);
    let all = client_endpoints(&servers);
    tokio::task::spawn_blocking({
        let all = all.clone();
        move || put_when_ready(&all, "/trace/ready", "0")
    })
    .await
    .unwrap();

    // Leaderships move while a young cluster balances: each attempt sends a
    // traced put first to a node that did not lead the key's range a moment
    // ago, and its trace says what really happened.
    let mut seen = Vec::new();
    for attempt in 0..6 {
        let key = format!("/trace/{attempt}");
        let leader = leader_of(&all, &key);
        let first = servers
            .iter()
            .map(|s| s.client_address.clone())
            .find(|a| Some(a) != leader.as_ref())
            .unwrap();
        let out = std::process::Command::new(BIN)
            .args(["--endpoints", &format!("{first},{all}")])
            .args(["--otlp-endpoint", &endpoint, "put", &key, "traced"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        // The CLI flushes as it exits; nodes export every 5 s.
        let mut verdict = None;
        for _ in 0..150 {
            let spans = collector.0.lock().unwrap().clone();
            // The CLI names its span after the command; one put per attempt
            // means telling them apart by trace: keep only this attempt's.
            let fresh: Vec<Got> = spans
                .iter()
                .filter(|s| !seen.contains(&s.trace))
                .cloned()
                .collect();
            if let Some((v, names)) = judge(&fresh, "rangedb put") {
                let complete = v.put_nodes.len() >= 2 && v.applied_on.is_some() && v.hop.is_some();
                if complete {
                    eprintln!("attempt {attempt}: one trace: {v:?}");
                    for (name, instance) in &names {
                        eprintln!("  {name:<30} {instance}");
                    }
                    return;
                }
                verdict = Some((v, names));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("attempt {attempt} (first {first}): incomplete: {verdict:?}");
        let spans = collector.0.lock().unwrap().clone();
        if let Some(root) = spans
            .iter()
            .find(|s| s.instance == "cli" && !seen.contains(&s.trace))
        {
            seen.push(root.trace.clone());
        }
    }
    panic!("no traced put showed spans of two nodes linked under its trace, with the apply and a node -> node hop");
}
