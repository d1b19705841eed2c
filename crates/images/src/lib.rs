//! Container images in the mesh (skeleton; being built).
