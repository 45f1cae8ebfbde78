// Quamba2's head reordering and grouping for Mamba2 (quamba2.md §4), written by hand: it is
// small, and the reference's scikit-learn calls are not deterministic across machines.
//   1. Statistic: per channel of x after conv + SiLU, the mean over a sample's tokens of |x|,
//      then the maximum over the samples.
//   2. In every head, the channels sorted by it (ascending; ties by index). The heads of each SSD
//      group are clustered into `nhg` (4) head groups by Ward's agglomerative clustering of their
//      L2-normalised sorted profiles; within a head group, the sorted channel positions are cut
//      into `ndg` (4) dim groups by k-means over the positions (features: the normalised values of
//      the group's heads there; initial centres at positions 0, P/4, P/2, 3P/4).
//   3. The permutation (heads of a head group together, each head's channels in sorted order)
//      is applied to in_proj (z, x, dt rows), conv1d (x channels), A_log, D, dt_bias, the gated
//      norm and out_proj's columns: the model computes the same function, with x's channels
//      laid out so that every (head group, dim group) block is contiguous within each head.
// Determinism: stable sorts, ties to the lower index, clusters numbered by their first head.
// Departure from the reference code (quamba2.md §0.1 #2): the dim groups of head group k are
// computed from the heads of cluster k (the reference reads the rows of whichever heads
// originally sat at those positions); an empty or non-contiguous k-means result (the reference
// crashes) falls back to equal dim groups.
#pragma once
#include <vector>

#include "mambaq/model.h"
#include "model/quant_state.h"

namespace mambaq {

struct HeadOrder {
  std::vector<int> channel;  // {d_inner}: new channel -> old channel
  std::vector<int> head;     // {nheads}: new head -> old head
  HeadGroups groups;
};

// Ward's agglomerative clustering of `n` points of dimension `d` (row-major) into `k` clusters;
// labels numbered by each cluster's first point. Ties: the pair with the lowest indices merges.
std::vector<int> ward_clusters(const std::vector<double>& points, int n, int d, int k);
// Lloyd's k-means with the given initial centres (k of them, dimension d); labels of the n points.
std::vector<int> kmeans(const std::vector<double>& points, int n, int d, std::vector<double> centres, int k);

// The grouping of one layer from its channel statistic {d_inner}.
HeadOrder group_heads(const ModelConfig& cfg, const std::vector<float>& stat, int nhg = 4, int ndg = 4);
// Permute one layer's float weights by `o` (the function it computes is unchanged).
void reorder_layer(const ModelConfig& cfg, const HeadOrder& o, LayerWeights& w);
// The statistic of step 1 for every layer: {n_layer}{d_inner}.
std::vector<std::vector<float>> channel_stats(const Model& m, const std::vector<std::vector<int32_t>>& samples,
                                              bool progress);

}  // namespace mambaq
