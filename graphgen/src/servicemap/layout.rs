//! Where each node goes: layered like Grafana's node graph, callers left and callees right.
//! Layers and the order within them come from `rust-sugiyama` (Sugiyama's method: cycles
//! broken, layers by network simplex, crossings reduced by barycenters); here they are only
//! turned sideways and spaced so that no two nodes can overlap. Pure.

/// Horizontal distance between layers: room for a node and its edge labels.
pub const LAYER_GAP: f64 = 300.0;
/// Least vertical distance between two nodes of one layer.
pub const NODE_GAP: f64 = 130.0;
/// Space around the drawing.
pub const MARGIN: f64 = 110.0;

/// Graphs with at most this many edges get the crate's extra crossing reduction.
const TRANSPOSE_UP_TO: usize = 200;

/// Node centres, in the order of the nodes given, and the size of the whole drawing.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub positions: Vec<(f64, f64)>,
    pub width: f64,
    pub height: f64,
}

/// Lays out `nodes` nodes joined by `edges` (caller index, callee index). Self-calls and
/// repeated edges do not affect the layout.
pub fn layered(nodes: usize, edges: &[(usize, usize)]) -> Layout {
    if nodes == 0 {
        return Layout {
            positions: Vec::new(),
            width: 2.0 * MARGIN,
            height: 2.0 * MARGIN,
        };
    }
    let mut links: Vec<(u32, u32)> = edges
        .iter()
        .filter(|(a, b)| a != b && *a < nodes && *b < nodes)
        .map(|&(a, b)| (a as u32, b as u32))
        .collect();
    links.sort_unstable();
    links.dedup();
    let vertices: Vec<(u32, (f64, f64))> = (0..nodes as u32).map(|i| (i, (1.0, 1.0))).collect();
    let config = rust_sugiyama::configure::Config {
        vertex_spacing: 1.0,
        // Swapping neighbours to save crossings costs 10× the time on large graphs (600
        // edges: 2.5 s instead of 0.2 s, release build) for little gain there.
        transpose: links.len() <= TRANSPOSE_UP_TO,
        ..Default::default()
    };
    // The crate's own bugs must not take a page down: fall back to one column.
    let components = std::panic::catch_unwind(|| {
        rust_sugiyama::from_vertices_and_edges(&vertices, &links, &config)
    })
    .unwrap_or_else(|_| {
        tracing::warn!("service map layout failed; drawing the nodes in one column");
        vec![((0..nodes).map(|i| (i, (0.0, 0.0))).collect(), 1.0, 1.0)]
    });

    let mut positions = vec![(0.0, 0.0); nodes];
    let mut top = MARGIN;
    let mut width: f64 = 0.0;
    // One component under the other, the largest first.
    let mut components = components;
    components.sort_by_key(|(c, _, _)| std::cmp::Reverse(c.len()));
    for (placed, _, _) in components {
        // The crate stacks layers downwards (y) and spreads a layer along x: turn it sideways.
        let mut layers: Vec<f64> = placed.iter().map(|(_, (_, y))| *y).collect();
        layers.sort_by(f64::total_cmp);
        layers.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        let layer_of = |y: f64| layers.partition_point(|l| *l < y - 1e-9);
        let mut by_layer: Vec<Vec<(usize, f64)>> = vec![Vec::new(); layers.len()];
        for (id, (x, y)) in &placed {
            by_layer[layer_of(*y)].push((*id, *x));
        }
        for members in by_layer.iter_mut() {
            members.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        }
        // The crate's unit: the smallest distance between neighbours in a layer.
        let unit = by_layer
            .iter()
            .flat_map(|m| m.windows(2).map(|w| w[1].1 - w[0].1))
            .filter(|d| *d > 1e-9)
            .fold(f64::INFINITY, f64::min);
        let scale = if unit.is_finite() {
            NODE_GAP / unit
        } else {
            NODE_GAP
        };
        // The crate's coordinates may start anywhere: the topmost node goes to `top`.
        let lowest = placed
            .iter()
            .map(|(_, (x, _))| *x)
            .fold(f64::INFINITY, f64::min);
        let mut bottom = top;
        for (layer, members) in by_layer.iter().enumerate() {
            let mut previous: Option<f64> = None;
            for (id, x) in members.iter() {
                let wanted = top + (x - lowest) * scale;
                let y = previous.map_or(wanted, |p| wanted.max(p + NODE_GAP));
                positions[*id] = (MARGIN + layer as f64 * LAYER_GAP, y);
                previous = Some(y);
                bottom = bottom.max(y);
            }
            width = width.max(MARGIN + layer as f64 * LAYER_GAP);
        }
        top = bottom + NODE_GAP;
    }
    Layout {
        positions,
        width: width + MARGIN + 60.0,
        height: top - NODE_GAP + MARGIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_two_nodes_closer_than_the_gap(layout: &Layout) {
        for (i, a) in layout.positions.iter().enumerate() {
            for b in &layout.positions[i + 1..] {
                let apart =
                    (a.0 - b.0).abs() >= LAYER_GAP - 1e-6 || (a.1 - b.1).abs() >= NODE_GAP - 1e-6;
                assert!(apart, "{a:?} and {b:?} overlap");
            }
            assert!(a.0 >= MARGIN && a.0 <= layout.width && a.1 >= MARGIN && a.1 <= layout.height);
        }
    }

    #[test]
    fn callers_are_left_of_their_callees() {
        // user → frontend → checkout → {inventory, payments → gateway}, frontend → inventory.
        let edges = [(0, 1), (1, 2), (2, 3), (2, 4), (4, 5), (1, 3)];
        let layout = layered(6, &edges);
        for (a, b) in edges {
            assert!(
                layout.positions[a].0 < layout.positions[b].0,
                "{a} → {b}: {layout:?}"
            );
        }
        no_two_nodes_closer_than_the_gap(&layout);
    }

    #[test]
    fn fifty_services_with_cycles_and_self_calls_do_not_overlap_and_are_stable() {
        let mut edges = Vec::new();
        for i in 0..50usize {
            edges.push((i, (i * 7 + 3) % 50));
            edges.push((i, (i * 13 + 11) % 50));
            edges.push((i, i)); // calls itself
        }
        let layout = layered(50, &edges);
        no_two_nodes_closer_than_the_gap(&layout);
        assert_eq!(
            layered(50, &edges),
            layout,
            "the same graph is drawn the same way"
        );
    }

    #[test]
    fn disconnected_parts_are_stacked_and_an_empty_map_has_a_size() {
        let layout = layered(5, &[(0, 1), (2, 3)]);
        no_two_nodes_closer_than_the_gap(&layout);
        assert!(
            layout.positions[4].1 > MARGIN,
            "the lone node gets its own row"
        );
        let empty = layered(0, &[]);
        assert!(empty.positions.is_empty() && empty.width > 0.0);
    }
}
