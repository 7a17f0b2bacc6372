"""LrSchedule.at and directive_in_force against the proto's contract."""
import math

import pytest

from spotter._proto import pb
from spotter.schedule import Directive, LrSchedule, Optimizer, directive_in_force


def test_linear_and_cosine_follow_the_contract():
    lin = LrSchedule("linear", 10, 20, 1.0, 3.0)
    assert [lin.at(s) for s in (0, 10, 15, 20, 99)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    cos = LrSchedule("cosine", 0, 100, 1.0, 0.0)
    assert cos.at(0) == 1.0 and cos.at(100) == 0.0
    assert cos.at(50) == pytest.approx(0.5)
    assert cos.at(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert LrSchedule("constant", 5, 6, 0.3, 9.0).at(100) == 0.3


def test_from_proto():
    d = pb.Directive(version=3, effective_step=40, phase=pb.PHASE_REFINEMENT, stop=False,
                     advisory=True, cause=pb.CAUSE_OVERRIDE, reason="r")
    d.lr.kind = pb.LrSchedule.KIND_COSINE
    d.lr.start_step, d.lr.end_step, d.lr.start_lr, d.lr.end_lr = 40, 80, 0.1, 0.01
    d.optimizer.kind = pb.OptimizerInstruction.KIND_NATURAL_GRADIENT
    d.optimizer.damping = 0.01
    x = Directive.from_proto(d)
    assert (x.version, x.effective_step, x.phase, x.advisory, x.cause) == (3, 40, "refinement", True, "override")
    assert x.lr == LrSchedule("cosine", 40, 80, 0.1, 0.01)
    assert x.optimizer.kind == "natural_gradient" and x.optimizer.damping == 0.01


def mk(version, eff, lr, advisory=False, generation=0):
    return Directive(version, eff, "acquisition", LrSchedule("constant", 0, 0, lr, lr), Optimizer(),
                     advisory=advisory, generation=generation)


def test_directive_in_force():
    ds = [mk(1, 0, 1.0), mk(2, 50, 2.0), mk(3, 80, 3.0, advisory=True)]
    assert directive_in_force([], 10) is None
    assert directive_in_force(ds, 49).version == 1
    assert directive_in_force(ds, 50).version == 2
    assert directive_in_force(ds, 1000).version == 2  # advisory never in force
    assert directive_in_force(ds, 1000, skip_advisory=False).version == 3
    assert directive_in_force([mk(2, 50, 2.0)], 10) is None
    # A later generation (run re-created by the server) wins once effective.
    ds.append(mk(1, 0, 9.0, generation=1))
    assert directive_in_force(ds, 60).lr.at(60) == 9.0
