"""Pictures of what the network learned (the paper's section 6.1)."""

import numpy as np
import tensorflow as tf
from alexnet_tf import files, metrics

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


CAPTION = 14               # pixels of a caption strip (one line of PIL's default font)
QUERY_FRAME = (220, 40, 40)  # the frame around a retrieval query


def caption_strip(width, texts, height=CAPTION):
    """uint8 [height, width, 3] white, each (left, text) of `texts` written in black at left;
    a text's lines ("\n") one under the other, CAPTION pixels apart."""
    from PIL import Image, ImageDraw    # here, so that training does not import Pillow
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for left, text in texts:
        for i, line in enumerate(text.split("\n")):
            draw.text((left + 1, 1 + i * CAPTION), line, fill=(0, 0, 0))
    return np.asarray(strip, np.uint8)


def fit_line(text, chars):
    """`text` in at most `chars` characters: a longer one keeps its start and its end (a file's
    extension) around "..", so no caption is cut off mid-word at its end."""
    if len(text) <= chars:
        return text
    tail = max(1, (chars - 2) // 2)
    return text[:chars - 2 - tail] + ".." + text[-tail:]


def kernel_figure(tower_kernels, columns=16, zoom=3):
    """Figure 3 labelled: above each tower's block of `kernel_grid` a caption naming the tower
    (tower a ran on GPU 1 in the paper, tower b on GPU 2) and its kernel count."""
    parts = []
    for t, kernels in enumerate(tower_kernels):
        block = kernel_grid([kernels], columns, zoom)
        name = (f"tower {'ab'[t]} (GPU {t + 1})" if len(tower_kernels) > 1 else "one tower")
        parts += [caption_strip(block.shape[1], [(0, f"{name}: {kernels.shape[-1]} kernels "
                                                     f"{kernels.shape[0]}x{kernels.shape[1]}x3")]),
                  block, np.full((TOWER_GAP, block.shape[1], 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=0)


def chromatic_fraction(kernels):
    """How colour-specific conv1 kernels are: their chromatic energy over their total energy.

    For kernels [size, size, 3, k]: sum over the kernels of |w - grey(w)|^2 over sum of |w|^2,
    where grey(w) is each pixel's mean over R, G, B. 0 for colour-agnostic (grey) kernels,
    larger for colour-specific ones. The paper's figure 3: tower a's (GPU 1) kernels
    largely colour-agnostic, tower b's largely colour-specific.
    """
    w = np.asarray(kernels, np.float64)
    grey = w.mean(axis=2, keepdims=True)
    return float(((w - grey) ** 2).sum() / max((w ** 2).sum(), 1e-30))


# --- Figure 4: predictions (left) and retrieval (right) ----------------------

THUMBNAIL = 96          # retrieval grid tile, pixels a side
QUERY_GAP = 8           # extra pixels between the query column and its neighbours
PANEL_IMAGE = 160       # prediction panel: the image, pixels a side
BAR_ROW = 14            # prediction panel: height of one class's bar row
PANEL_GAP = 8           # pixels between prediction panels
TRUE_COLOUR, OTHER_COLOUR = (235, 120, 120), (140, 175, 230)   # the paper's red bar for the label


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


def retrieval_figure(rows, captions, gap=GAP, query_gap=QUERY_GAP):
    """Figure 4 (right) labelled: each row of `retrieval_grid` with a caption under each tile
    (the query's name; each neighbour's class and distance) and a frame around the query.

    Args:
      rows: As for `retrieval_grid`.
      captions: One list of strings per row, one per tile, each of up to two lines ("\n");
        a line longer than the tile is shortened in its middle (`fit_line`).
    """
    size = rows[0][0].shape[0]
    step, chars = size + gap, max(1, (size + gap) // 6)      # PIL's default font: 6 px a glyph
    parts = []
    for row, texts in zip(rows, captions):
        grid = retrieval_grid([row], gap, query_gap)
        grid[:2, :size] = grid[size - 2:size, :size] = QUERY_FRAME
        grid[:size, :2] = grid[:size, size - 2:size] = QUERY_FRAME
        lefts = [c * step + (query_gap if c > 0 else 0) for c in range(len(row))]
        texts = ["\n".join(fit_line(line, chars) for line in t.split("\n")[:2]) for t in texts]
        parts += [grid, caption_strip(grid.shape[1], list(zip(lefts, texts)), 2 * CAPTION),
                  np.full((gap + 3, grid.shape[1], 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=0)


# --- Grad-CAM overlays (alexnet-figures --gradcam, alexnet-predict --gradcam) ---------------

HEAT_ALPHA = 0.5       # the map's share of an overlay pixel where the map is 1
COLOUR_BAR = 12        # pixels: the colour bar's width


def heat_colours(heat):
    """[h, w] in [0, 1] -> uint8 [h, w, 3], a jet-like scale: 0 dark blue, 0.5 green, 1 dark red."""
    x = np.clip(np.asarray(heat, np.float64), 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * x - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


def heat_overlay(image, heat, alpha=HEAT_ALPHA):
    """uint8 `image` [h, w, 3] under `heat` [h, w] in [0, 1]: each pixel mixes in the map's colour
    by alpha * heat, so that where the map is 0 the image shows as it is."""
    weight = alpha * np.clip(np.asarray(heat, np.float64), 0.0, 1.0)[..., None]
    mixed = (1.0 - weight) * image + weight * heat_colours(heat)
    return np.round(mixed).astype(np.uint8)


def colour_bar(height, width=COLOUR_BAR):
    """The scale of `heat_colours`, 1 at the top and 0 at the bottom: uint8 [height, width, 3]."""
    return heat_colours(np.repeat(np.linspace(1.0, 0.0, height)[:, None], width, axis=1))


def grad_cam_panel(image, heat, lines, size=PANEL_IMAGE):
    """The image, the same image under its Grad-CAM map, a colour bar marked 1 and 0, and caption
    `lines` (e.g. the predicted and the true class) under them.

    Returns:
      uint8 [size + 2 * CAPTION, 2 * size + gap + bar + marks, 3].
    """
    from PIL import Image    # here, so that training does not import Pillow
    image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    heat = np.asarray(Image.fromarray(np.asarray(heat, np.float32), "F").resize(
        (size, size), Image.BILINEAR))
    gap, marks = 4, 10
    width = 2 * size + 2 * gap + COLOUR_BAR + marks
    top = np.full((size, width, 3), 255, np.uint8)
    top[:, :size] = image
    top[:, size + gap:2 * size + gap] = heat_overlay(image, heat)
    left = 2 * size + 2 * gap
    top[:, left:left + COLOUR_BAR] = colour_bar(size)
    ticks = caption_strip(marks, [(0, "1")])[:CAPTION], caption_strip(marks, [(0, "0")])
    top[:CAPTION, left + COLOUR_BAR:] = ticks[0]
    top[size - CAPTION:, left + COLOUR_BAR:] = ticks[1]
    chars = max(1, width // 6)                       # PIL's default font: 6 px a glyph
    caption = caption_strip(width, [(0, "\n".join(fit_line(l, chars) for l in lines[:2]))],
                            2 * CAPTION)
    return np.concatenate([top, caption], axis=0)


def write_png(path, image):
    """Writes uint8 [h, w, 3] as a PNG, atomically."""
    files.atomic_write(path, tf.io.encode_png(image).numpy())


# --- The confusion matrix (alexnet-eval --report, TensorBoard) ----------------

CELL = 24                 # pixels per cell of a readable confusion matrix
MAX_CELLS = 40            # more classes than this: the most-confused pairs as a list instead
LABEL_WIDTH = 110


def confusion_image(matrix, class_names, pairs=20):
    """The confusion matrix as uint8 [h, w, 3]: a grid of counts for up to MAX_CELLS classes
    (rows true, columns predicted, darker = more images), else the `pairs` most-confused pairs."""
    from PIL import Image, ImageDraw
    matrix = np.asarray(matrix)
    n = len(class_names)
    if n > MAX_CELLS:
        lines = [f"{t} -> {p}: {count}" for t, p, count in metrics.most_confused(
            matrix, class_names, pairs)] or ["no confusions"]
        image = Image.new("RGB", (560, 18 * (len(lines) + 1) + 4), "white")
        draw = ImageDraw.Draw(image)
        draw.text((4, 2), f"most-confused pairs (true -> predicted: images), {n} classes",
                  fill=(0, 0, 0))
        for i, line in enumerate(lines, 1):
            draw.text((4, 2 + 18 * i), line[:90], fill=(0, 0, 0))
        return np.asarray(image)
    side = LABEL_WIDTH + n * CELL + 2
    image = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(image)
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    for t in range(n):
        draw.text((2, LABEL_WIDTH + t * CELL + 6), str(class_names[t])[:16], fill=(0, 0, 0))
        for p in range(n):
            shade = int(round(255 * (1 - share[t, p])))
            left, top = LABEL_WIDTH + p * CELL, LABEL_WIDTH + t * CELL
            draw.rectangle([left, top, left + CELL - 1, top + CELL - 1],
                           fill=(shade, shade, 255), outline=(200, 200, 200))
            if matrix[t, p]:
                draw.text((left + 3, top + 6), str(int(matrix[t, p])),
                          fill=(255, 255, 255) if shade < 128 else (0, 0, 0))
    for p in range(n):          # column labels, rotated
        label = Image.new("RGB", (LABEL_WIDTH - 4, CELL), "white")
        ImageDraw.Draw(label).text((2, 6), str(class_names[p])[:16], fill=(0, 0, 0))
        image.paste(label.rotate(90, expand=True), (LABEL_WIDTH + p * CELL, 2))
    draw.text((2, 2), "true \\ predicted", fill=(0, 0, 0))
    return np.asarray(image)


# --- Figure 1: training error against epochs (alexnet-study) -------------------

PLOT = (640, 400)         # plot area, pixels
MARGIN = (60, 20, 250, 40)  # left, top, right (legend), bottom
PALETTE = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
           (0, 0, 128), (0, 100, 60)]            # the study's 11 runs, each its own colour


def curves_image(curves, threshold, highlight=()):
    """Figure 1: training error (0..1) against epochs, one line per run, the threshold dashed.

    Args:
      curves: {label: [(epoch, error), ...]}.
      threshold: the training error drawn as a dashed line (the paper's 25%).
      highlight: label prefixes drawn thick (the paper's ReLU and tanh), first ones first.

    Returns:
      uint8 [h, w, 3].
    """
    from PIL import Image, ImageDraw
    (width, height), (left, top, right, bottom) = PLOT, MARGIN
    image = Image.new("RGB", (left + width + right, top + height + bottom), "white")
    draw = ImageDraw.Draw(image)
    x_max = max([e for points in curves.values() for e, _ in points] + [1e-9])

    def xy(epoch, error):
        return (left + epoch / x_max * width, top + (1 - min(max(error, 0), 1)) * height)

    draw.rectangle([left, top, left + width, top + height], outline=(0, 0, 0))
    for i in range(6):                                   # y ticks every 20%
        y = top + height - i * height / 5
        draw.line([left - 4, y, left, y], fill=(0, 0, 0))
        draw.text((left - 34, y - 6), f"{i * 20}%", fill=(0, 0, 0))
    for i in range(5):                                   # x ticks
        epoch = x_max * i / 4
        x = left + i * width / 4
        draw.line([x, top + height, x, top + height + 4], fill=(0, 0, 0))
        draw.text((x - 8, top + height + 6), f"{epoch:.2g}", fill=(0, 0, 0))
    draw.text((left + width / 2 - 20, top + height + 22), "epochs", fill=(0, 0, 0))
    draw.text((4, top - 16), "training error", fill=(0, 0, 0))
    y = xy(0, threshold)[1]
    for x in range(left, left + width, 10):              # the threshold, dashed
        draw.line([x, y, min(x + 5, left + width), y], fill=(0, 0, 0))
    draw.text((left + width + 6, y - 6), f"{threshold:.0%}", fill=(0, 0, 0))

    def rank(label):
        hits = [i for i, prefix in enumerate(highlight) if label.startswith(prefix)]
        return hits[0] if hits else len(highlight)

    labels = sorted(curves, key=rank)                    # highlighted first in the legend
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    for label in reversed(labels):                       # ... and drawn last, on top
        points = [xy(e, err) for e, err in curves[label]]
        thick = rank(label) < len(highlight)
        colour = colours[label]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3 if thick else 1)
        elif points:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2],
                         fill=colour)
        legend_y = top + 4 + 14 * labels.index(label)
        draw.line([left + width + 40, legend_y + 6, left + width + 60, legend_y + 6], fill=colour,
                  width=3 if thick else 1)
        draw.text((left + width + 64, legend_y), label[:30], fill=(0, 0, 0))
    return np.asarray(image)
