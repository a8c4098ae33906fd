"""Hessian-vector products of an MLP cohort (cohort_net.FusedNet) written out: Pearlmutter's R-operator in
batched products, every member at once, no autograd.

Why: CohortHessianOperator's products are one double-backward through autograd's cached gradient graph; for
the demo's narrow MLPs that is framework-bound (graph bookkeeping, the cross-entropy's second-order nodes), and
on a CPU it lost to one model at a time above ~4,000 parameters (cohort_experiment.HESSIAN_COHORT_CPU_MAX_PARAMS),
so the wide members went one by one. Here a product is the R-forward and R-backward of the network, six matrix
products per hidden layer (as many as autograd's), from quantities cached once, into buffers made once
(docs/benchmarks.md "Cohorts: the fused Hessian-vector product").

The loss is CohortHessianOperator's: the sum over members of each member's mean cross-entropy over the k shared
points (no weight decay; the FusedNet has no BatchNorm or dropout, so its mode changes nothing), whose Hessian is
block-diagonal, member m's Hessian H_m as block m. Notation per member, layers l = 1..L, k points:

    forward      h_0 = x (k, in_1);  z_l = h_{l-1} W_l^T + b_l (k, out_l);  h_l = relu(z_l);  p = softmax(z_L)
    gradient     dz_L = (p - onehot) / k;  dh_{l-1} = dz_l W_l;  dz_{l-1} = dh_{l-1} * [h_{l-1} > 0]
    direction    V = (V_l (out_l, in_l), v_l (out_l)) per layer: one flat vector in the member model's
                 parameters() order (weight row-major, then bias, layer after layer)
    R-forward    Rh_0 = 0;  Rz_l = Rh_{l-1} W_l^T + h_{l-1} V_l^T + v_l;  Rh_l = Rz_l * [h_l > 0]
    R-loss       Rdz_L = (diag p - p p^T) Rz_L / k, row by row: p * (Rz_L - <p, Rz_L>) / k
    R-backward   R(dW_l) = Rdz_l^T h_{l-1} + dz_l^T Rh_{l-1};  R(db_l) = sum over points of Rdz_l;
                 Rdz_{l-1} = (Rdz_l W_l + dz_l V_l) * [h_{l-1} > 0]   (ReLU's second derivative is 0 a.e.)

and H_m V = (R(dW_l), R(db_l)) per layer. As in cohort_fused.py the bias is folded: each layer's input carries a
column of ones, H1_{l-1} = [h_{l-1}, 1] (M, k, in + 1), and its parameters are one block [W^T; b] (M, in + 1, out),
so z_l = H1_{l-1} @ [W^T; b], and H1^T @ Rdz gives [R(dW)^T; R(db)] in one product (the fused step's orientation
for weight gradients). These sums over the k points are one torch.mm per member: as one bmm, the last layer's
(10 classes) rounded differently for a member alone and in a cohort.

Every operation acts on each member alone (bmm over the member axis or one mm per member, reductions over a
member's own points and classes), so a member's product does not depend on the cohort's size or its place in
it: bit for bit on one host (tests/workloads/test_fused_hessian.py). Against autograd's double-backward the
products agree to rounding (~1e-16 relative in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workloads.cohort_fused import padded
from workloads.cohort_net import FusedNet, MemberFlatten


class FusedHessianOperator:
    """{member: v (dim,) or a block V (b, dim)} -> the same shapes, H_m applied (row by row for a block):
    CohortHessianOperator's interface (members, dim, dtype, device, counts) for a FusedNet.

    inputs (k, *input_shape) shared by all members; targets (M, k) int64 class labels. Cached at construction
    (per member, all (M, ...)): each layer's input with its ones column, H1_{l-1} (k, in + 1) and, contiguous for
    the ReLU masks, h_l (k, out_l); its parameter block [W^T; b] (in + 1, out) and W (out, in); the logits'
    softmax p (k, C); the gradient at each layer's output dz_l (k, out). Memory: about twice the activations of
    one forward pass, as autograd's cached graph, plus one product's buffers per number of members asking.
    The last layer's classes are padded to a multiple of cohort_fused.LOGIT_PAD with zero weights, probabilities
    and gradients, so every padded column of its products is an exact zero: MKL's products with 10 columns ran
    3-4x slower than with 16 (as in the fused step). A product is computed for the members that asked only (a
    member whose estimate stopped costs nothing): their rows of the caches are gathered once per set of askers.
    """

    def __init__(self, net: FusedNet, inputs: torch.Tensor, targets: torch.Tensor):
        linears = net.linears
        self.members = net.members
        self.dtype, self.device = linears[0].weight.dtype, linears[0].weight.device
        self.shapes = [tuple(layer.weight.shape[1:]) for layer in linears]  # (out, in) per layer
        sizes = [o * (i + 1) for o, i in self.shapes]
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]  # each layer's offset in a flat vector
        self.dim = sum(sizes)
        self.counts = [0] * self.members
        m, k = self.members, len(inputs)
        if tuple(targets.shape) != (m, k):
            raise ValueError(f"the fused Hessian takes one class label per point and member, (M, k) = ({m}, {k}) "
                             f"targets; got {tuple(targets.shape)}")
        x = inputs.to(self.device, self.dtype)
        if isinstance(next(iter(net.module.children())), MemberFlatten):
            x = x.flatten(1)
        classes = self.shapes[-1][0]
        self.pad = padded(classes) - classes
        with torch.no_grad():
            # Contiguous copies: while the fused step trains, the weights are transposed views (cohort_net.FusedNet).
            self.blocks = [torch.cat([layer.weight.transpose(1, 2), layer.bias.unsqueeze(1)], dim=1).contiguous()
                           for layer in linears]  # [W^T; b] (M, in + 1, out)
            self.weights = [layer.weight.contiguous() for layer in linears]  # W (M, out, in)
            self.h1 = [torch.cat([x, x.new_ones(k, 1)], dim=1).expand(m, k, -1).contiguous()]
            self.hidden = [None]  # h_l (M, k, out_l) of the hidden layers, contiguous: ReLU masks read them
            for block in self.blocks[:-1]:
                self.hidden.append(torch.relu(torch.bmm(self.h1[-1], block)))
                self.h1.append(torch.cat([self.hidden[-1], x.new_ones(m, k, 1)], dim=2))
            p = torch.softmax(torch.bmm(self.h1[-1], self.blocks[-1]), dim=2)
            labels = targets.to(self.device).unsqueeze(2)
            dz = p.scatter_add(2, labels, p.new_full(labels.shape, -1.0)).div_(k)
            # The classes padded with zeros (probabilities, gradients, weights): see the class doc.
            self.p, dz = F.pad(p, (0, self.pad)), F.pad(dz, (0, self.pad))
            self.blocks[-1] = F.pad(self.blocks[-1], (0, self.pad))
            self.weights[-1] = F.pad(self.weights[-1], (0, 0, 0, self.pad))
            self.dz = [dz]  # dz_l, last layer first, reversed below
            for i in range(len(linears) - 1, 0, -1):
                dz = torch.ops.aten.threshold_backward(torch.bmm(dz, self.weights[i]), self.hidden[i], 0)
                self.dz.append(dz)
            self.dz.reverse()
        self.k = k
        self._gathered: tuple[tuple[int, ...], dict] | None = None
        self._workspaces: dict[int, dict] = {}

    def _caches(self, asked: tuple[int, ...]) -> dict:
        """The caches' rows of the members ``asked`` (all of them: the caches themselves), gathered once per set."""
        if asked == tuple(range(self.members)):
            return dict(blocks=self.blocks, weights=self.weights, h1=self.h1, hidden=self.hidden, p=self.p,
                        dz=self.dz)
        if self._gathered is None or self._gathered[0] != asked:
            index = torch.tensor(asked, device=self.device)
            pick = (lambda ts: [None if t is None else t.index_select(0, index) for t in ts])
            self._gathered = (asked, dict(blocks=pick(self.blocks), weights=pick(self.weights), h1=pick(self.h1),
                                          hidden=pick(self.hidden), p=self.p.index_select(0, index),
                                          dz=pick(self.dz)))
        return self._gathered[1]

    def _workspace(self, n: int) -> dict:
        """The tensors a product of n members writes (made once per n; zeros where padding stays zero): each
        layer's direction block [V^T; v] (n, in + 1, out), Rz_l (n, k, out), the hidden layers' Rh_l and
        Rdz_l (n, k, out_l), and the flat result (n, dim). Made per product, these allocations of megabytes each
        were returned to the system and faulted in again every time."""
        if n not in self._workspaces:
            new = (lambda *shape: torch.zeros(*shape, dtype=self.dtype, device=self.device))
            outs = [out for out, _ in self.shapes[:-1]] + [self.shapes[-1][0] + self.pad]
            self._workspaces[n] = dict(
                directions=[new(n, in_f + 1, out) for (_, in_f), out in zip(self.shapes, outs)],
                rz=[new(n, self.k, out) for out in outs], rh=[new(n, self.k, out) for out in outs[:-1]],
                rdz=[new(n, self.k, out) for out in outs[:-1]], out=new(n, self.dim))
        return self._workspaces[n]

    @torch.no_grad()
    def products(self, vectors: torch.Tensor, asked: tuple[int, ...]) -> torch.Tensor:
        """H_m v_m for the members ``asked`` (ascending), vectors (len(asked), dim) -> (len(asked), dim), a
        workspace tensor (overwritten by the next product of as many members)."""
        c, n = self._caches(asked), len(asked)
        ws = self._workspace(n)
        directions, rz, rh, rdz_hidden, out = ws["directions"], ws["rz"], ws["rh"], ws["rdz"], ws["out"]
        for (out_f, in_f), start, direction in zip(self.shapes, self.starts, directions):  # [V^T; v]
            direction[:, :-1, :out_f].copy_(vectors[:, start:start + out_f * in_f].view(n, out_f, in_f).transpose(1, 2))
            direction[:, -1, :out_f].copy_(vectors[:, start + out_f * in_f:start + out_f * (in_f + 1)])
        # R-forward: Rz_l = H1_{l-1} [V^T; v] + Rh_{l-1} W^T, Rh_l = Rz_l masked
        torch.bmm(c["h1"][0], directions[0], out=rz[0])
        for i in range(1, len(self.shapes)):
            torch.ops.aten.threshold_backward.grad_input(rz[i - 1], c["hidden"][i], 0, grad_input=rh[i - 1])
            torch.bmm(c["h1"][i], directions[i], out=rz[i]).baddbmm_(rh[i - 1], c["blocks"][i][:, :-1])
        p = c["p"]
        rdz = p * (rz[-1] - (p * rz[-1]).sum(2, keepdim=True)) / self.k
        # R-backward, last layer first; each layer's [R(dW)^T; R(db)] written into place, transposed
        for i in range(len(self.shapes) - 1, -1, -1):
            (out_f, in_f), start = self.shapes[i], self.starts[i]
            grad = _per_member(torch.mm, c["h1"][i].transpose(1, 2), rdz)  # [Rdz^T h; Rdb] (n, in + 1, out)
            weight = grad[:, :-1]
            if i:
                weight = _per_member(torch.addmm, rh[i - 1].transpose(1, 2), c["dz"][i], weight)
                rdh = torch.bmm(c["dz"][i], directions[i][:, :-1].transpose(1, 2), out=rdz_hidden[i - 1])
                rdh.baddbmm_(rdz, c["weights"][i])
                rdz = torch.ops.aten.threshold_backward.grad_input(rdh, c["hidden"][i], 0, grad_input=rdh)
            out[:, start:start + out_f * in_f].view(n, out_f, in_f).copy_(weight[..., :out_f].transpose(1, 2))
            out[:, start + out_f * in_f:start + out_f * (in_f + 1)].copy_(grad[:, -1, :out_f])
        return out

    def __call__(self, vectors: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """{member: v (dim,) or a block V (b, dim)} -> the same shapes. A block's row r is computed with row r of
        the other members that asked for at least r + 1 rows (probing in blocks did not pay on a CPU: rows in
        turn keep each product's tensors as small as one vector's)."""
        # The calling thread's OpenMP and MKL thread counts set to torch's: lanczos_members calls from its members'
        # threads, and a new thread keeps the machine's default until ATen first runs a parallel loop in it (a
        # lazy per-thread init), so its first products were split over every core: rounded otherwise (the same
        # estimate differed from run to run) and slow beside other processes.
        torch.set_num_threads(torch.get_num_threads())
        rows = {member: v if v.dim() == 2 else v.unsqueeze(0) for member, v in vectors.items()}
        results = {member: [] for member in rows}
        for r in range(max(len(v) for v in rows.values())):
            asked = tuple(sorted(member for member, v in rows.items() if len(v) > r))
            stacked = torch.stack([rows[member][r].to(self.device, self.dtype) for member in asked])
            done = self.products(stacked, asked)
            for j, member in enumerate(asked):
                self.counts[member] += 1
                # Copies, not views into ``done``: see CohortHessianOperator.__call__ (alignment).
                results[member].append(done[j].clone())
        return {member: torch.stack(results[member]) if vectors[member].dim() == 2 else results[member][0]
                for member in rows}


def _per_member(product, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """(n, r, s) @ (n, s, t) (+ c (n, r, t)) as one ``product`` (torch.mm, or torch.addmm with c) per member, each
    into a fresh tensor, then stacked (n, r, t). For the weight gradients, sums over the k points: one bmm rounded
    the last layer's (10 classes) differently for a member alone and in a cohort, at one thread too, and so did an
    mm written with out= into member i's slot of one (n, r, t) tensor (its start moves with i: alignment)."""
    if c is None:
        return torch.stack([product(a[i], b[i]) for i in range(a.shape[0])])
    return torch.stack([product(c[i], a[i], b[i]) for i in range(a.shape[0])])
