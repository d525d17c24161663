"""The paper's figures as pixel arrays: layouts checked pixel by pixel against the inputs."""

import numpy as np

from alexnet_tf import figures


def test_kernel_grid_places_each_kernel_scaled_to_its_own_range():
    rng = np.random.default_rng(0)
    towers = [rng.normal(size=(11, 11, 3, 48)), rng.normal(size=(11, 11, 3, 48))]
    zoom, columns = 2, 16
    grid = figures.kernel_grid(towers, columns=columns, zoom=zoom)
    tile = 11 * zoom + 1
    block = 3 * tile                                # 48 kernels / 16 a row = 3 rows per tower
    assert grid.shape == (2 * block + 4, columns * tile, 3)
    for tower, j in ((0, 0), (0, 17), (1, 5), (1, 47)):
        top = tower * (block + 4) + (j // columns) * tile
        left = (j % columns) * tile
        k = towers[tower][..., j]
        expected = np.round((k - k.min()) / (k.max() - k.min()) * 255)
        got = grid[top:top + 11 * zoom:zoom, left:left + 11 * zoom:zoom]   # one pixel per weight
        np.testing.assert_array_equal(got, expected.astype(np.uint8))
        assert (grid[top:top + 11 * zoom, left + 11 * zoom] == 255).all()   # the white gap
    assert (grid[block:block + 4] == 255).all()     # the gap between the towers' blocks


def test_retrieval_grid_puts_the_query_first_then_the_neighbours():
    tiles = [[np.full((8, 8, 3), 10 * (r * 4 + c), np.uint8) for c in range(4)] for r in range(2)]
    grid = figures.retrieval_grid(tiles, gap=1, query_gap=5)
    assert grid.shape == (2 * 9 - 1, 4 * 9 - 1 + 5, 3)
    for r in range(2):
        for c in range(4):
            left = c * 9 + (5 if c else 0)
            assert (grid[r * 9:r * 9 + 8, left:left + 8] == 10 * (r * 4 + c)).all()


def test_prediction_panel_bars_are_as_long_as_the_probabilities():
    image = np.zeros((20, 20, 3), np.uint8)
    names, probs = ["cat", "dog", "cow"], [0.5, 0.25, 1.0]
    panel = figures.prediction_panel(image, names, probs, true_name="dog", size=100)
    assert panel.shape == (100 + 4 * figures.BAR_ROW, 100, 3)
    for i, p in enumerate(probs):
        top = 100 + (i + 1) * figures.BAR_ROW
        rows = panel[top:top + figures.BAR_ROW]
        colour = figures.TRUE_COLOUR if names[i] == "dog" else figures.OTHER_COLOUR
        columns = np.nonzero(np.all(rows == colour, axis=-1).any(axis=0))[0]   # text may overlay
        assert columns.min() == 0 and columns.max() + 1 == round(p * 100), names[i]


def test_panel_grid_wraps_rows():
    panels = [np.full((5, 7, 3), i, np.uint8) for i in range(5)]
    grid = figures.panel_grid(panels, columns=2, gap=3)
    assert grid.shape == (3 * 5 + 2 * 3, 2 * 7 + 3, 3)
    assert (grid[16:21, 0:7] == 4).all() and (grid[16:21, 10:17] == 255).all()
