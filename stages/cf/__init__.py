"""`rerec pretrain-cf`: LightGCN item embeddings on the graph's interactions (the reward's CF
side).
"""
