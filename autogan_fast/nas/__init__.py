"""The architecture search machinery: the RNN controller (`controller`), the reward pipeline
(`reward`) and the search loop that drives them over the shared GAN (`loop`).
"""
