"""GaussianTable: row edits keep every column and the optimiser's per-row state aligned."""

import math

import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.gaussian_table import GaussianTable


def _table(n=5):
    t = GaussianTable()
    t.add("means", torch.arange(n * 3, dtype=torch.float32).view(n, 3), role="position")
    t.add("feat", torch.arange(n, dtype=torch.float32).view(n, 1, 1).repeat(1, 2, 4))  # [N, 2, 4]
    t.add("flag", torch.arange(n) % 2, trainable=False)
    return t


def test_columns_share_the_row_count():
    t = _table()
    assert len(t) == 5
    with pytest.raises(InputError, match="expected 5 rows"):
        t.add("bad", torch.zeros(4, 3))
    with pytest.raises(InputError, match="already exists"):
        t.add("means", torch.zeros(5, 3))
    with pytest.raises(InputError, match="no column 'nope'"):
        t["nope"]


def test_keep_and_append_edit_every_column_and_the_adam_state():
    t = _table()
    opt = torch.optim.Adam([t["means"], t["feat"]], lr=0.1)
    (t["means"].sum() * 2 + t["feat"].pow(2).sum()).backward()
    opt.step()
    m_state = opt.state[t["means"]]["exp_avg"].clone()  # [5, 3]
    f_state = opt.state[t["feat"]]["exp_avg_sq"].clone()  # [5, 2, 4]
    means_before, feat_before = t["means"].detach().clone(), t["feat"].detach().clone()

    keep = torch.tensor([True, False, True, True, False])
    new = {"means": torch.full((2, 3), 7.0), "feat": torch.full((2, 2, 4), -1.0), "flag": torch.tensor([9, 9])}
    t.edit_rows(keep=keep, new_rows=new, optimizers=[opt])

    assert len(t) == 5
    torch.testing.assert_close(t["means"][:3], means_before[keep])
    torch.testing.assert_close(t["means"][3:], new["means"])
    torch.testing.assert_close(t["feat"][:3], feat_before[keep])
    assert t["flag"].tolist() == [0, 0, 1, 9, 9]
    # the optimiser holds the new parameters, with the kept rows' state and zeros for new rows
    assert opt.param_groups[0]["params"][0] is t["means"]
    st = opt.state[t["means"]]
    torch.testing.assert_close(st["exp_avg"][:3], m_state[keep])
    assert st["exp_avg"][3:].abs().sum() == 0
    torch.testing.assert_close(opt.state[t["feat"]]["exp_avg_sq"][:3], f_state[keep])
    # and it keeps working
    t["means"].sum().backward()
    opt.step()


def test_edit_rows_rejects_incomplete_or_misshaped_rows():
    t = _table()
    with pytest.raises(InputError, match="missing"):
        t.edit_rows(new_rows={"means": torch.zeros(1, 3)})
    with pytest.raises(InputError, match="bool"):
        t.edit_rows(keep=torch.ones(5))
    rows = {"means": torch.zeros(1, 3), "feat": torch.zeros(1, 3, 4), "flag": torch.zeros(1, dtype=torch.long)}
    with pytest.raises(InputError, match="feat"):
        t.edit_rows(new_rows=rows)


def test_state_dict_loads_into_a_table_of_another_size():
    src = _table(7)
    dst = _table(3)
    dst.load_state_dict(src.state_dict())
    assert len(dst) == 7
    for name, value in src.items():
        torch.testing.assert_close(dst[name], value)


def test_nbytes_counts_own_columns_only():
    t = _table(4)
    own = 4 * 3 * 4 + 4 * 8 * 4 + 4 * 8  # float means, float feat, int64 flag
    assert t.nbytes() == own
    t.add("router", torch.zeros(4, 3), attached=True)
    assert t.nbytes() == own
    assert t.nbytes(attached=True) == 4 * 3 * 4
    assert not math.isnan(t.nbytes(attached=None))
