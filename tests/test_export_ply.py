"""``moegs-bench export-ply``: the file is read back by plyfile and by a reader written here from
the PLY format's rules (header lines, then packed little-endian rows), and its columns are the
3DGS encoding of the experts' Gaussians at that time. Also the PLY reader's errors and the import
command's generic ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from moegs_bench.adapters.registry import Registry
from moegs_bench.app.finished import open_finished_run
from moegs_bench.interop.ply import PlyError, read_ply
from test_cli import assert_one_line_error, cli, cli_here

_TYPES = {"float": "f4", "double": "f8", "uchar": "u1", "char": "i1", "int": "i4", "uint": "u4", "short": "i2",
          "ushort": "u2"}


def parse_ply(path) -> tuple[dict[str, np.ndarray], list[str]]:
    """A binary little-endian vertex PLY by the format's rules (independent of plyfile)."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0"
    fields, count, comments = [], None, []
    for line in lines[2:-1]:
        words = line.split()
        if words[0] == "comment":
            comments.append(line[len("comment "):])
        elif words[0] == "element":
            assert words[1] == "vertex"
            count = int(words[2])
        else:
            assert words[0] == "property" and len(words) == 3
            fields.append((words[2], "<" + _TYPES[words[1]]))
    rows = np.frombuffer(data[end:], dtype=np.dtype(fields))
    assert rows.shape[0] == count
    return {name: rows[name] for name, _ in fields}, comments


def test_export_ply_writes_every_experts_gaussians_in_the_3dgs_layout(finished, tmp_path):
    _, run, cache = finished
    out = tmp_path / "mix.ply"
    proc = cli("export-ply", str(run), "--time", "0.5", "--out", str(out), "--cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    cols, comments = parse_ply(out)
    ply = PlyData.read(str(out))["vertex"]
    for name, values in cols.items():  # plyfile reads the same file the same way
        np.testing.assert_array_equal(np.asarray(ply[name]), values)
    opened = open_finished_run(run, registry=Registry.discover(), cache_dir=cache)
    ids = list(opened.config.experts)
    assert comments[1:] == [f"expert_id {i} = {eid}" for i, eid in enumerate(ids)]
    with torch.no_grad():
        states = [e.gaussians_at(0.5) for e in opened.mixture.experts]
    degree = max(gs.sh_degree for gs in states)
    k = (degree + 1) ** 2
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
             *[f"f_rest_{i}" for i in range(3 * (k - 1))], "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3", "expert_id"]
    assert list(cols) == names
    assert all(cols[n].dtype == np.float32 for n in names[:-1]) and cols["expert_id"].dtype == np.uint8
    start = 0
    for i, gs in enumerate(states):
        rows = slice(start, start + gs.means.shape[0])
        start = rows.stop
        assert (cols["expert_id"][rows] == i).all()
        got = lambda *ns: np.stack([cols[n][rows] for n in ns], 1).astype(np.float64)  # noqa: E731
        np.testing.assert_allclose(got("x", "y", "z"), gs.means.numpy(), atol=1e-6)
        assert (got("nx", "ny", "nz") == 0).all()
        q = gs.quats.double()
        np.testing.assert_allclose(got("rot_0", "rot_1", "rot_2", "rot_3"), (q / q.norm(dim=1, keepdim=True)).numpy(),
                                   atol=1e-6)
        np.testing.assert_allclose(np.exp(got("scale_0", "scale_1", "scale_2")), gs.scales.numpy(), rtol=1e-5)
        opac = 1 / (1 + np.exp(-cols["opacity"][rows].astype(np.float64)))
        np.testing.assert_allclose(opac, gs.opacities.numpy(), atol=1e-6)
        kk = (gs.sh_degree + 1) ** 2
        sh = gs.colors[:, :kk].numpy()  # [N, K, 3]
        np.testing.assert_allclose(got("f_dc_0", "f_dc_1", "f_dc_2"), sh[:, 0], atol=1e-6)
        for c in range(3):  # channel-major: every red coefficient of degree >= 1, then green, then blue
            for j in range(k - 1):
                want = sh[:, 1 + j, c] if 1 + j < kk else 0.0
                np.testing.assert_allclose(cols[f"f_rest_{c * (k - 1) + j}"][rows], want, atol=1e-6)
    assert start == len(cols["x"])

    one = tmp_path / "stg.ply"
    proc = cli("export-ply", str(run), "--time", "0", "--expert", "stg", "--out", str(one), "--cache", str(cache))
    assert proc.returncode == 0, proc.stderr
    cols, _ = parse_ply(one)
    assert "expert_id" not in cols and len(cols["x"]) == states[ids.index("stg")].means.shape[0]


def test_export_ply_errors(finished, tmp_path):
    _, run, cache = finished
    out = tmp_path / "x.ply"
    assert_one_line_error(cli_here("export-ply", str(run), "--time", "1.5", "--out", str(out), "--cache", str(cache)),
                          "--time 1.5", "[0, 1]")
    assert_one_line_error(cli_here("export-ply", str(run), "--time", "0.5", "--expert", "4dgs", "--out", str(out),
                              "--cache", str(cache)), "--expert 4dgs", "static, stg")
    assert_one_line_error(cli_here("export-ply", str(tmp_path), "--time", "0.5", "--out", str(out)), "RUN_DIR",
                          "not a finished run folder")
    assert_one_line_error(cli_here("export-ply", str(run), "--time", "0.5", "--out", str(tmp_path)), "is a folder")
    assert not out.exists()


def test_ply_reader_errors(tmp_path):
    rows = np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4")])
    rows["x"] = np.arange(4)
    good = tmp_path / "a.ply"
    PlyData([PlyElement.describe(rows, "vertex")], text=True).write(str(good))  # ASCII is read too
    assert read_ply(good)["x"].tolist() == [0, 1, 2, 3]
    PlyData([PlyElement.describe(rows, "vertex")]).write(str(good))
    data = good.read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[:-3])
    (tmp_path / "no.ply").write_bytes(b"solid cube\n")
    PlyData([PlyElement.describe(rows, "face")]).write(str(tmp_path / "face.ply"))
    for name, needle in (("cut.ply", "early end-of-file"), ("no.ply", "expected 'ply'"), ("face.ply", "no vertex"),
                         ("gone.ply", "no such file")):
        with pytest.raises(PlyError, match=needle):
            read_ply(tmp_path / name)


def test_import_errors_before_anything_is_read(tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(cli_here("import", "nerfies", str(tmp_path), "--scene", "synthetic:kitchen", "--out", str(out)),
                          "FORMAT 'nerfies'", "4dgaussians, e-d3dgs, ex4dgs, stg")
    assert not out.exists()
