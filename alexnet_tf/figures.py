"""Pictures of what the network learned (the paper's section 6.1)."""

import numpy as np
import tensorflow as tf
from alexnet_tf import files, preprocessing

GAP = 1          # pixels between kernels
TOWER_GAP = 4    # extra pixels between the towers' row blocks


def conv1_kernels(model):
    """The conv1 kernels, one [11, 11, 3, k] array per tower (one array with one tower)."""
    names = [layer.name for layer in model.layers if layer.name.startswith("conv1")
             and layer.name != "conv1_pad"]
    return [np.asarray(model.get_layer(name).kernel) for name in sorted(names)]


def kernel_grid(tower_kernels, columns=16, zoom=3):
    """Figure 3: every conv1 kernel as a small RGB tile, one block of rows per tower.

    Each kernel is scaled on its own to [0, 255] (min to max over its 11x11x3 values).

    Args:
      tower_kernels: list of [size, size, 3, k] arrays, one per tower.
      columns: tiles per row.
      zoom: each kernel pixel becomes zoom x zoom pixels.

    Returns:
      uint8 [height, width, 3]. Kernel j of tower t starts at
      (top_t + (j // columns) * (size * zoom + GAP), (j % columns) * (size * zoom + GAP)),
      where top_t is the height of the blocks above plus TOWER_GAP per block.
    """
    size = tower_kernels[0].shape[0]
    tile = size * zoom + GAP
    blocks = []
    for kernels in tower_kernels:
        count = kernels.shape[-1]
        rows = -(-count // columns)
        block = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
        for j in range(count):
            k = kernels[..., j].astype(np.float64)
            k = (k - k.min()) / max(k.max() - k.min(), 1e-12)
            k = np.kron(np.round(k * 255), np.ones((zoom, zoom, 1))).astype(np.uint8)
            top, left = (j // columns) * tile, (j % columns) * tile
            block[top:top + size * zoom, left:left + size * zoom] = k
        blocks.append(block)
        blocks.append(np.full((TOWER_GAP, columns * tile, 3), 255, np.uint8))
    return np.concatenate(blocks[:-1], axis=0)


# --- Figure 4: predictions (left) and retrieval (right) ----------------------

THUMBNAIL = 96          # retrieval grid tile, pixels a side
QUERY_GAP = 8           # extra pixels between the query column and its neighbours
PANEL_IMAGE = 160       # prediction panel: the image, pixels a side
BAR_ROW = 14            # prediction panel: height of one class's bar row
PANEL_GAP = 8           # pixels between prediction panels
TRUE_COLOUR, OTHER_COLOUR = (235, 120, 120), (140, 175, 230)   # the paper's red bar for the label


def thumbnail(encoded, size):
    """JPEG/PNG/... bytes -> uint8 [size, size, 3]: the central square (as evaluation sees it)."""
    image = preprocessing.decode_256(encoded)
    image = tf.image.resize(image, [size, size], method="area")
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8).numpy()


def retrieval_grid(rows, gap=GAP, query_gap=QUERY_GAP):
    """Figure 4 (right): one row per query, [query, neighbour 1, ..., neighbour k].

    Args:
      rows: list of lists of uint8 [s, s, 3] tiles, all rows of the same length.

    Returns:
      uint8 [R * (s + gap) - gap, C * (s + gap) - gap + query_gap, 3] on white; tile
      (r, c) starts at (r * (s + gap), c * (s + gap) + (query_gap if c > 0 else 0)).
    """
    size, columns = rows[0][0].shape[0], len(rows[0])
    step = size + gap
    grid = np.full((len(rows) * step - gap, columns * step - gap + query_gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            left = c * step + (query_gap if c > 0 else 0)
            grid[r * step:r * step + size, left:left + size] = tile
    return grid


def prediction_panel(image, names, probabilities, true_name, size=PANEL_IMAGE):
    """Figure 4 (left): an image, its true label, and a bar per top-k class (the label's in red).

    Returns:
      uint8 [size + (k + 1) * BAR_ROW, size, 3].
    """
    from PIL import Image, ImageDraw    # here, so that training does not import Pillow
    k = len(names)
    panel = Image.new("RGB", (size, size + (k + 1) * BAR_ROW), "white")
    panel.paste(Image.fromarray(image).resize((size, size), Image.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(panel)
    draw.text((2, size + 1), true_name, fill=(0, 0, 0))
    for i, (name, p) in enumerate(zip(names, probabilities)):
        top = size + (i + 1) * BAR_ROW
        colour = TRUE_COLOUR if name == true_name else OTHER_COLOUR
        draw.rectangle([0, top + 1, max(1, round(float(p) * size)) - 1, top + BAR_ROW - 2],
                       fill=colour)
        draw.text((2, top + 1), f"{name} {float(p) * 100:.0f}%", fill=(0, 0, 0))
    return np.asarray(panel)


def panel_grid(panels, columns=4, gap=PANEL_GAP):
    """Panels of one size side by side, `columns` a row, on white."""
    height, width = panels[0].shape[:2]
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    grid = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for i, panel in enumerate(panels):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        grid[top:top + height, left:left + width] = panel
    return grid


def write_png(path, image):
    """Writes uint8 [h, w, 3] as a PNG, atomically."""
    files.atomic_write(path, tf.io.encode_png(image).numpy())
