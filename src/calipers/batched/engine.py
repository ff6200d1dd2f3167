"""Many small MLPs trained and sampled at once, as one stacked model (batched layers).

Every member of a group (an outer split × a grid point × a refit) has the same architecture; its
weights are slices ``W[m]`` of stacked tensors ``(M, fan_in, fan_out)`` and one forward pass is a
``torch.baddbmm`` per layer. Members are independent: the summed loss has block-diagonal
gradients, Adam is element-wise, and each member brings its own data, data order, dropout masks,
dropout rate and weight decay. So a group of M members gives, to float tolerance, what training
them one by one gives (``batched=False`` does exactly that, one member per group).

# NOTE [Batched layers, not vmap]
``torch.func.stack_module_state`` + ``functional_call`` + ``vmap`` would stack any module, but
dropout under ``vmap(randomness="different")`` draws from the global generator in a layout that
a one-by-one run cannot reproduce, and the masks would depend on how members are grouped. With
explicit batched layers the masks are inputs, drawn per member from the member's own generator
(NOTE [Member randomness]), so results do not depend on grouping, order or device, and the
stacked Adam is plain ``torch.optim.Adam`` on a few large tensors (cheap on CPU and GPU).

The engine is split by concern; this module is its public face (``calipers.batched.engine``):

==================  ==========================================================================
``members.py``      ``MLPArch``, ``Member``, ``MemberFit``, ``init_weights``, member checks, groups
``randomness.py``   member random streams: orders and keep masks (NOTE [Member randomness])
``workspace.py``    the stacked forward/backward pass in preallocated tensors (NOTE [Workspace],
                    NOTE [Hand-written backward])
``train.py``        ``fit_members``: Adam over groups of stacked members
``mc.py``           ``mc_members``: stacked MC dropout, reduced with ``calipers.uncertainty``
==================  ==========================================================================
"""

from __future__ import annotations

from calipers.batched.mc import MCTask, MemberMC, MemberProba, mc_members
from calipers.batched.members import Member, MemberFit, MLPArch, init_weights
from calipers.batched.randomness import _random_bytes  # noqa: F401  (tests compare the stream)
from calipers.batched.train import fit_members

__all__ = ["MCTask", "MLPArch", "Member", "MemberFit", "MemberMC", "MemberProba", "fit_members",
           "init_weights", "mc_members"]
