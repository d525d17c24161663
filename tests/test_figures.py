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


def test_kernel_figure_labels_each_towers_block_above_it():
    rng = np.random.default_rng(1)
    towers = [rng.normal(size=(11, 11, 3, 48)), rng.normal(size=(11, 11, 3, 48))]
    figure = figures.kernel_figure(towers, columns=16, zoom=2)
    tile, caption = 11 * 2 + 1, figures.CAPTION
    block = 3 * tile
    assert figure.shape == (2 * (caption + block) + 4, 16 * tile, 3)
    for tower in range(2):
        top = tower * (caption + block + 4)
        label = figure[top:top + caption]
        assert (label < 128).any(), f"tower {tower}'s caption has no text"
        k = towers[tower][..., 5]                     # kernel 5: row 0, column 5 of the block
        expected = np.round((k - k.min()) / (k.max() - k.min()) * 255).astype(np.uint8)
        got = figure[top + caption:top + caption + 22:2, 5 * tile:5 * tile + 22:2]
        np.testing.assert_array_equal(got, expected)
    # The two captions differ (tower a / tower b): their pixels are not the same.
    assert (figure[:caption] != figure[caption + block + 4:2 * caption + block + 4]).any()


def test_retrieval_figure_frames_the_query_and_captions_every_tile():
    tiles = [[np.full((96, 96, 3), 100 + r * 4 + c, np.uint8) for c in range(3)] for r in range(2)]
    captions = [["query\na.jpg", "circle\nfc7 dist 1.5", "ring\nfc7 dist 2.0"],
                ["query\nb.jpg", "star\nfc7 dist 0.5", "x\nfc7 dist 9"]]
    figure = figures.retrieval_figure(tiles, captions, gap=1, query_gap=8)
    row = 96 + 2 * figures.CAPTION + 1 + 3           # a tile, two caption lines, the rows' gap
    assert figure.shape == (2 * row - 4, 3 * 97 - 1 + 8, 3)
    for r in range(2):
        top = r * row
        assert (figure[top, :96] == figures.QUERY_FRAME).all()            # the frame's edges
        assert (figure[top + 95, :96] == figures.QUERY_FRAME).all()
        assert (figure[top + 2:top + 94, 2:94] == 100 + r * 4).all()      # inside the frame
        for c in (1, 2):
            left = c * 97 + 8
            assert (figure[top:top + 96, left:left + 96] == 100 + r * 4 + c).all()
            for line in range(2):                  # the class, then the distance
                text = figure[top + 96 + line * figures.CAPTION:
                              top + 96 + (line + 1) * figures.CAPTION, left:left + 96]
                assert (text < 128).any(), f"tile ({r}, {c}) has no caption line {line}"


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


def test_captions_keep_a_long_names_start_and_extension():
    """retrieval.png cut "query: circle.jpg" to "query: circle.jp"; a line longer than its tile
    now keeps its start and its end around "..", and the query's name has a line of its own."""
    assert figures.fit_line("circle.jpg", 16) == "circle.jpg"
    assert figures.fit_line("a_very_long_file_name.jpeg", 16) == "a_very_..me.jpeg"   # 7 + 2 + 7
    assert len(figures.fit_line("x" * 40, 16)) == 16
    strip = figures.caption_strip(40, [(0, "ab\ncd")], 2 * figures.CAPTION)
    assert (strip[:figures.CAPTION] < 128).any() and (strip[figures.CAPTION:] < 128).any()
