//! DOT and JSON renderings of an overlay and its metrics.

use serde::Serialize;

use super::graph::Overlay;
use super::metrics::GraphMetrics;

/// Graphviz DOT: `agentmesh topology --format dot | dot -Tsvg > mesh.svg`.
pub fn to_dot(graph: &Overlay, title: &str) -> String {
    let mut text = format!("graph {title:?} {{\n  node [shape=circle];\n");
    for name in graph.names() {
        text.push_str(&format!("  {name:?};\n"));
    }
    for (a, b) in graph.named_edges() {
        text.push_str(&format!("  {a:?} -- {b:?};\n"));
    }
    text.push_str("}\n");
    text
}

#[derive(Serialize)]
struct JsonOverlay<'a> {
    kind: &'a str,
    nodes: &'a [String],
    edges: Vec<(String, String)>,
    metrics: GraphMetrics,
}

/// JSON with the node list, the edge list and the metrics.
pub fn to_json(graph: &Overlay, kind: &str) -> String {
    let document = JsonOverlay {
        kind,
        nodes: graph.names(),
        edges: graph.named_edges(),
        metrics: GraphMetrics::of(graph),
    };
    serde_json::to_string_pretty(&document).expect("overlay JSON always serialises")
}
