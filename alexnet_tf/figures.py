"""Pictures of what the network learned (the paper's section 6.1)."""

import numpy as np

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
