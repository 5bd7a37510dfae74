// Pass 2b: where each node's samples go in the node-sorted active list (an exclusive prefix sum of
// the per-node counts), written into each node's decoder block; the workgroup counts of the per-node
// indirect dispatches of the field passes; the total in active_count[0]. One invocation: the node
// count is small.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(7) var<storage, read> node_counts: array<u32>;
@group(0) @binding(8) var<storage, read_write> active_count: array<u32>;
// per node: forward (x, y, z) workgroups, then backward (x, y, z)
@group(0) @binding(9) var<storage, read_write> dispatch_args: array<u32>;
@group(0) @binding(10) var<storage, read_write> decoders: array<u32>;

// x and y workgroup counts for `count` invocations in groups of `size` (x at most 65535).
fn groups_2d(count: u32, size: u32) -> vec2<u32> {
    let groups = (count + size - 1u) / size;
    let x = min(groups, 65535u);
    return vec2<u32>(x, select(0u, (groups + x - 1u) / max(x, 1u), x > 0u));
}

@compute @workgroup_size(1)
fn main() {
    var offset = 0u;
    for (var n = 0u; n < frame.n_nodes; n++) {
        let count = node_counts[n];
        decoders[n * DECODER_WORDS] = offset;
        decoders[n * DECODER_WORDS + 1u] = count;
        let forward = groups_2d(count, 64u);
        let backward = groups_2d(count, WG_BACKWARD);
        dispatch_args[n * 6u] = forward.x;
        dispatch_args[n * 6u + 1u] = forward.y;
        dispatch_args[n * 6u + 2u] = 1u;
        dispatch_args[n * 6u + 3u] = backward.x;
        dispatch_args[n * 6u + 4u] = backward.y;
        dispatch_args[n * 6u + 5u] = 1u;
        offset += count;
    }
    active_count[0] = offset;
}
