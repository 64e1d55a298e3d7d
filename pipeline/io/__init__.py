"""File formats of the field: MRC (mrcfile), STAR (starfile), TIFF (tifffile), cryoSPARC .cs."""
