"""Task 1: turn item titles, tags, cover images and user behaviour into item_emb_d128."""
