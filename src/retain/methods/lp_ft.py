"""LP-FT (Kumar et al., 2022): fit a linear probe first, then fine-tune everything from it."""

from __future__ import annotations

from retain.methods.base import Method, TaskContext, register
from retain.methods.linear_probe import LinearProbeOptions, probe_head


@register
class LPFT(Method):
    name = "lp_ft"
    Options = LinearProbeOptions

    def before_task(self, ctx: TaskContext) -> None:
        probe_head(ctx, self.opts.l2, self.opts.max_iter)
